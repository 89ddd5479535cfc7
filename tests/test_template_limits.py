"""The letter template cannot exhaust time or memory: each limit is a TemplateProblemError with its line.

The limits (dispatcher/domain/templating.py): 262,144 characters in any text and in the letter, 10,000
items in a range or list and loop iterations in one rendering, calls nested 32 deep, numbers of
4,096 bits. The inputs here would run for hours or take gigabytes if a limit were missing; each is
refused before the work is done.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.domain.errors import TemplateProblemError
from dispatcher.domain.templating import compile_letter, render_letter

from .test_campaign_input import campaign, check

CONTEXT = {"to": {"name": "Xi Jinping", "address": ["Zhongnanhai", "Beijing"]}, "cc": []}


def render(source: str) -> str:
    return render_letter(compile_letter(source, name="letter.txt.j2"), CONTEXT)


def refusal(source: str) -> TemplateProblemError:
    with pytest.raises(TemplateProblemError) as info:
        render(source)
    return info.value


@pytest.mark.parametrize(
    ("source", "line", "words"),
    [
        (
            "Dear {{ to.name }},\n{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}",
            2,
            "range() of 99999 items: at most 10000",
        ),
        (
            "{% for i in range(5000) %}\n{% for j in range(5000) %}{% endfor %}{% endfor %}",
            2,
            "more than 10000 loop iterations in one letter",
        ),
        ("{% for c in 'x' * 200000 %}{% endfor %}", 1, "more than 10000 loop iterations in one letter"),
        ("Dear {{ to.name }},\n\n{{ 'x'*300000000 }}", 3, "would make a text of 300000000 characters: at most 262144"),
        ("{{ [0] * 100000 }}", 1, "would make a list of 100000 items: at most 10000"),
        ("{{ 2 ** 999999999 }}", 1, "would make a number of about 1000000000 bits: at most 4096"),
        ("{% set a = 'x' * 200000 %}\n{{ a ~ a }}", 2, "would make a text of 400000 characters: at most 262144"),
        ("{% set a = 'x' * 200000 %}\n{{ a + a }}", 2, "would make a text of 400000 characters: at most 262144"),
        (
            "{% set ns = namespace(a='x') %}{% for i in range(40) %}\n{% set ns.a = ns.a ~ ns.a %}{% endfor %}",
            2,
            "would make a text of 524288 characters: at most 262144",
        ),
        ("{{ 'x'.ljust(10 ** 9) }}", 1, "width 1000000000 is over 262144"),
        ("{{ 'x'|center(1000000000) }}", 1, "1000000000 is over 262144"),
        ("{{ '%0999999999d' % 1 }}", 1, "format width 999999999 is over 262144"),
        ("{{ '%*d' % (999999999, 1) }}", 1, "a '*' width or precision is not allowed"),
        ("{{ '{:>999999999}'.format(1) }}", 1, "format width 999999999 is over 262144"),
        ("{{ ('x' * 100000)|replace('x', 'yyyy') }}", 1, "would make a text of 400000 characters: at most 262144"),
        ("{{ ('x' * 200000).join(['a', 'b', 'c']) }}", 1, "would make a text of 400003 characters: at most 262144"),
        ("{{ ('a\\n' * 1000)|indent('x' * 1000) }}", 1, "would make a text of"),
        ("{{ ('x' * 1000)|wordwrap(1, wrapstring='y' * 1000) }}", 1, "would make a text of"),
        ("{{ ['x' * 200000] * 5 }}", 1, "would make a text of"),
        ("{{ ('x' * 100000).translate({120: 'y' * 100000}) }}", 1, "would make a text of"),
        ("{{ 'x'.encode() * 1000000000 }}", 1, "bytes are not available in a letter template"),
        ("{{ 'x'.encode().center(1000000000) }}", 1, "bytes are not available in a letter template"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}", 1, "calls nested more than 32 deep"),
        (
            "Dear {{ to.name }},\n{% for i in range(9000) %}{{ 'x' * 100 }}{% endfor %}",
            2,
            "the letter would be longer than 262144 characters",
        ),
        (
            "Dear\n{% set s %}{% for i in range(9000) %}{{ 'y' * 100 }}{% endfor %}{% endset %}{{ s|length }}",
            2,
            "would make a text of",
        ),
        ("Dear {{ to.name }},\n{{ '\\x1b[2J' }}", 2, "the letter would contain U+001B (ESCAPE)"),
    ],
)
def test_template_over_a_limit_is_refused_with_its_line(source: str, line: int, words: str) -> None:
    err = refusal(source)
    assert err.line == line, str(err)
    assert words in str(err)


def test_lipsum_is_not_offered() -> None:
    assert "undefined variable" in str(refusal("{{ lipsum(1000000) }}"))


def test_lists_cannot_be_changed() -> None:
    assert "refused by the template sandbox" in str(refusal("{% set l = [] %}{{ l.append(1) }}"))


def test_nesting_too_deep_to_compile() -> None:
    with pytest.raises(TemplateProblemError) as info:
        compile_letter("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", name="letter.txt.j2")
    assert "nested too deeply" in str(info.value)


def test_ordinary_letters_still_render() -> None:
    source = (
        "{% macro line(p) %}{{ p }}{% endmacro %}"
        "Dear {{ to.name }},\n{% for part in to.address %}{{ line(part) }}\n{% endfor %}"
        "{{ '%-6s|' % 'ab' }}{{ '{:>4}'.format(7) }}{{ 'x' * 3 }}{{ 2 ** 10 }}{{ to.name|center(14) }}\n"
        "{% for i in range(3) %}{{ loop.index }}{% endfor %}{{ ['a', 'b']|join(', ') }}"
    )
    assert render(source) == "Dear Xi Jinping,\nZhongnanhai\nBeijing\nab    |   7xxx1024  Xi Jinping  \n123a, b"


def test_each_rendering_has_its_own_loop_budget() -> None:
    template = compile_letter("{% for i in range(6000) %}{% endfor %}done", name="letter.txt.j2")
    assert [render_letter(template, CONTEXT) for _ in range(3)] == ["done", "done", "done"]


def test_validation_reports_the_limit_on_the_template_line(tmp_path: Path) -> None:
    source = "Dear {{ to.name }},\n\n{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}\n"
    report = check(campaign(tmp_path / "c", template=source))
    assert [(p.where, p.field) for p in report.errors] == [("letter template", "line 3")]
    assert "range() of 99999 items: at most 10000" in report.errors[0].message
