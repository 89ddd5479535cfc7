"""Random input never ends in a traceback: only the project's own errors and Problems come out.

Hypothesis feeds the campaign parser random TOML-ish text, random bytes and random valid TOML built by
changing the example campaign; the number and email checks random text and countries; the supporters
CSV reader random bytes and text; the letter template random Jinja-ish text. Example counts are kept
moderate so the suite stays fast.
"""

from __future__ import annotations

import copy
import tomllib
from datetime import UTC
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.domain.campaign_file import CampaignSpec, load_spec
from dispatcher.domain.errors import CampaignFileError, Problem, TemplateProblemError
from dispatcher.domain.supporters_csv import read_supporters
from dispatcher.domain.templating import compile_letter, render_letter
from dispatcher.domain.validation import Report, check_email, check_number, validate

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "config" / "campaigns" / "north-korean-refugees"
EXAMPLE = tomllib.loads((EXAMPLE_DIR / "campaign.toml").read_text(encoding="utf-8"))

# No example database: a failure prints its example, and runs leave no files behind.
SETTINGS = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
TOML_BITS = [
    "[campaign]", "[sender]", "[letter]", "[[to]]", "[[cc]]", "[supporters]", "[campaign.schedule]",
    'name = "x"', "name = 1", 'fax = ["+86 10 6307 0900"]', "fax = [", "email = []", 'urgency = "high"',
    "at = 2026-12-01T09:00:00", "=", '"', "'''", '"""', "[", "]", "{", "}", ",", ".", "\n", " ", "#", "\\u0000",
]  # fmt: skip
toml_ish = st.lists(st.sampled_from(TOML_BITS) | text, max_size=30).map("".join)

scalars = st.one_of(
    text,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.datetimes(timezones=st.none() | st.just(UTC)),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in the example's data, to change or delete."""
    found = [prefix] if prefix else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        found.extend(_paths(child, (*prefix, key)))
    return found


Change = tuple[tuple[Any, ...], Any]  # where in the example's data, and the new value (None deletes)
PATHS = _paths(EXAMPLE)
changes = st.lists(
    st.tuples(st.sampled_from(PATHS), st.none() | toml_values | st.sampled_from(["", "+011 86", "\r\n"])), max_size=4
)


def _changed(changes: list[Change]) -> dict[str, Any]:
    """The example's data with each change applied (None deletes), skipping changes to vanished places."""
    data = copy.deepcopy(EXAMPLE)
    for path, value in changes:
        parent, key = _at(data, path[:-1]), path[-1]
        if isinstance(parent, dict) and value is None:
            parent.pop(key, None)
        elif isinstance(parent, dict):
            parent[key] = value
        elif isinstance(parent, list) and isinstance(key, int) and key < len(parent):
            parent[key] = "" if value is None else value
    return data


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        if (isinstance(node, dict) and key in node) or (
            isinstance(node, list) and isinstance(key, int) and key < len(node)
        ):
            node = node[key]
        else:
            return None
    return node


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("campaign")
    for name in ("letter.txt.j2", "supporters.csv"):
        (path / name).write_bytes((EXAMPLE_DIR / name).read_bytes())
    return path


def _load_and_validate(path: Path) -> None:
    """What `dispatch campaign validate` does: a spec and a report, or a CampaignFileError."""
    try:
        spec = load_spec(path)
    except CampaignFileError as err:
        assert err.problems and all(isinstance(p, Problem) for p in err.problems)
        return
    assert isinstance(spec, CampaignSpec)
    assert isinstance(validate(spec, file=path), Report)


@SETTINGS
@given(source=toml_ish)
def test_campaign_parser_on_toml_ish_text(folder: Path, source: str) -> None:
    path = folder / "campaign.toml"
    path.write_text(source, encoding="utf-8")
    _load_and_validate(path)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_campaign_parser_on_random_bytes(folder: Path, data: bytes) -> None:
    path = folder / "campaign.toml"
    path.write_bytes(data)
    _load_and_validate(path)


@SETTINGS
@given(changes=changes, extra=st.dictionaries(text, toml_values, max_size=2))
def test_campaign_parser_on_changed_valid_toml(folder: Path, changes: list[Change], extra: dict[str, Any]) -> None:
    data = _changed(changes)
    data.update({key: value for key, value in extra.items() if key not in data})
    path = folder / "campaign.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    _load_and_validate(path)


REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
number_ish = st.from_regex(r"\A\+?[0-9 ()\-.+]{0,24}(( ?(ext\.?|x|;ext=) ?)[0-9]{1,5})?[A-Za-z]{0,8}\Z") | text


@SETTINGS
@given(raw=number_ish, country=st.sampled_from(REGIONS) | st.text(max_size=3))
def test_check_number_returns_a_number_or_a_problem(raw: str, country: str) -> None:
    value, problem = check_number(raw, country, file="f", where="w", field="fax[0]")
    assert (value is None) != (problem is None)
    if value is not None:
        assert value.startswith("+") and value[1:].isdigit()


email_ish = st.emails() | st.tuples(text, text).map("@".join) | text


@SETTINGS
@given(raw=email_ish)
def test_check_email_returns_an_address_or_a_problem(raw: str) -> None:
    value, problem = check_email(raw, file="f", where="w", field="email[0]")
    assert (value is None) != (problem is None)


csv_ish = st.lists(
    st.sampled_from(["email", "name", ",", "\n", "\r\n", '"', "a@example.org", "x", "\x00", "\ufeff"]) | text,
    max_size=30,
).map("".join)


@SETTINGS
@given(content=st.binary(max_size=300) | csv_ish.map(lambda s: s.encode("utf-8")))
def test_supporters_csv_reader_returns_rows_and_problems(folder: Path, content: bytes) -> None:
    (folder / "random.csv").write_bytes(content)
    found = read_supporters(folder, "random.csv", campaign_file="campaign.toml")
    assert all(isinstance(p, Problem) for p in found.problems)
    # every row is a member or left out, never both; a file-level problem leaves none of either
    assert not {r.line for r in found.members} & {r.line for r in found.rejected}
    assert all(p.where.startswith("line ") or (p.where, p.field) == ("supporters", "csv") for p in found.problems)


JINJA_BITS = [
    "{{", "}}", "{%", "%}", " for x in ", "range(", ")", "(", "endfor", "macro m()", "endmacro", "m()", " set a = ",
    "'x'", "9", "*", "**", "~", "|", "join", "center(", "format", "%", "'%s'", "to.name", "loop.index", "caller()",
    "if", "endif", "[", "]", ",", "\n", " ", ".", "__class__", "{#", "#}", "namespace(", "ns.a", "raw", "endraw",
]  # fmt: skip
jinja_ish = st.lists(st.sampled_from(JINJA_BITS) | text, max_size=25).map("".join)


@SETTINGS
@given(source=jinja_ish)
def test_letter_template_renders_or_names_its_problem(source: str) -> None:
    try:
        letter = render_letter(compile_letter(source, name="letter.txt.j2"), {"to": {"name": "Xi"}, "cc": []})
    except TemplateProblemError:
        return
    assert isinstance(letter, str)
