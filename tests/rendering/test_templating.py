"""The sandboxed letter environment: every problem is a TemplateProblemError with its line."""

from __future__ import annotations

import pytest

from dispatcher.domain.campaign_file import CampaignSpec
from dispatcher.domain.errors import TemplateProblemError
from dispatcher.domain.templating import compile_letter, letter_context, render_letter

from .conftest import LETTER_DATE


def _render(source: str, spec: CampaignSpec) -> str:
    template = compile_letter(source, name="letter.txt.j2")
    return render_letter(template, letter_context(spec, to=spec.to[0], date=LETTER_DATE))


def test_context_has_addressee_sender_cc_and_formatted_date(cjk_spec: CampaignSpec) -> None:
    source = "{{ to.name }}|{{ to.title }}|{{ cc[0].name }}|{{ sender.organisation }}|{{ date }}"
    text = _render(source, cjk_spec)
    assert text == "Xi Jinping|President|Wang Yi|Example Rights|27 November 2026"


def test_context_does_not_expose_routes(cjk_spec: CampaignSpec) -> None:
    with pytest.raises(TemplateProblemError, match="fax"):
        _render("{{ to.fax }}", cjk_spec)


def test_undefined_variable_names_its_line(cjk_spec: CampaignSpec) -> None:
    with pytest.raises(TemplateProblemError, match="minister") as info:
        _render("{{ to.name }}\n\nDear {{ minister }},\n", cjk_spec)
    assert info.value.line == 3
    assert info.value.template == "letter.txt.j2"


def test_syntax_error_names_its_line() -> None:
    with pytest.raises(TemplateProblemError, match="syntax error") as info:
        compile_letter("Dear minister,\n{% if to.name %}\nunclosed\n", name="letter.txt.j2")
    assert info.value.line is not None
    assert info.value.line >= 2


def test_syntax_error_in_expression_names_its_line() -> None:
    with pytest.raises(TemplateProblemError) as info:
        compile_letter("one\ntwo\n{{ to.name + }}\n", name="letter.txt.j2")
    assert info.value.line == 3


@pytest.mark.parametrize("expression", ["''.__class__", "''.__class__.__mro__", "to.__class__.__init__"])
def test_sandbox_escape_is_refused_with_its_line(cjk_spec: CampaignSpec, expression: str) -> None:
    with pytest.raises(TemplateProblemError, match="refused by the template sandbox") as info:
        _render(f"Dear minister,\n\n{{{{ {expression} }}}}\n", cjk_spec)
    assert info.value.line == 3


def test_runtime_error_in_expression_is_a_template_problem(cjk_spec: CampaignSpec) -> None:
    with pytest.raises(TemplateProblemError, match="ZeroDivisionError") as info:
        _render("a\n{{ 1 / 0 }}", cjk_spec)
    assert info.value.line == 2
