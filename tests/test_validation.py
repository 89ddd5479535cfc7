"""Validation of campaign files: every problem at once, named precisely, nothing silently fixed."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.errors import CampaignFileError
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.validation import check_number, validate

from .builders import build_campaign, guo_shengkun, wang_yi, xi_jinping


def test_seed_campaign_reports_exactly_the_malformed_fax(example_file: Path) -> None:
    report = validate(load_spec(example_file), file=example_file)
    assert len(report.errors) == 1, [str(p) for p in report.errors]
    problem = report.errors[0]
    assert problem.where == "to[0] (Xi Jinping)"
    assert problem.field == "fax[1]"
    assert "'+011 10 6238 1025'" in problem.message
    assert "'+011' is an international dialling prefix, not a country code" in problem.message
    assert problem.suggestion == "+86 10 6238 1025"
    assert "campaign.toml: to[0] (Xi Jinping): fax[1]:" in str(problem)


def test_seed_routes_are_normalised_to_e164_and_never_silently_fixed(example_file: Path) -> None:
    report = validate(load_spec(example_file), file=example_file)
    xi = report.routes[("to", 0)]
    assert [(r.channel, r.value) for r in xi] == [("fax", "+861063070900"), ("fax", None)]
    assert xi[1].raw_value == "+011 10 6238 1025"
    guo = report.routes[("cc", 0)]
    assert [(r.channel, r.value) for r in guo] == [("email", "gabzfwz@mps.gov.cn")]
    wang = report.routes[("cc", 1)]
    assert [(r.channel, r.value) for r in wang] == [("fax", "+861065591516")]


def test_fixed_seed_validates(tmp_path: Path) -> None:
    path = build_campaign(tmp_path)  # the example, its second fax to Xi Jinping written "+86 10 6238 1025"
    report = validate(load_spec(path), file=path)
    assert report.ok, [str(p) for p in report.problems]


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    path = build_campaign(
        tmp_path,
        to=[xi_jinping(timezone="Asia/Shangai", fax=["+86 10 6307 0900", "+011 10 6238 1025"])],
        cc=[guo_shengkun(email=["gabzfwz@@mps"]), wang_yi()],
    )
    report = validate(load_spec(path), file=path)
    fields = sorted((p.where, p.field) for p in report.errors)
    assert fields == [
        ("cc[0] (Guo Shengkun)", "email[0]"),
        ("cc[0] (Guo Shengkun)", "fax/email"),  # no usable route left for Guo Shengkun
        ("to[0] (Xi Jinping)", "fax[1]"),
        ("to[0] (Xi Jinping)", "timezone"),
    ]
    tz = next(p for p in report.errors if p.field == "timezone")
    assert tz.suggestion == "Asia/Shanghai"


def test_addressee_without_electronic_route_is_an_error(tmp_path: Path) -> None:
    path = build_campaign(tmp_path, cc=[guo_shengkun(), wang_yi(fax=[])])
    report = validate(load_spec(path), file=path)
    problem = next(p for p in report.errors if p.where == "cc[1] (Wang Yi)")
    assert "no usable electronic route" in problem.message


def test_shape_errors_name_the_key(tmp_path: Path) -> None:
    path = build_campaign(tmp_path, extra={"campaign": {"urgncy": "high"}})
    with pytest.raises(CampaignFileError) as info:
        load_spec(path)
    assert any(p.where == "campaign.urgncy" for p in info.value.problems)


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[campaign]\nname = "x\n', encoding="utf-8")
    with pytest.raises(CampaignFileError) as info:
        load_spec(path)
    assert "line 2" in str(info.value)


def test_bad_supporter_rows_named_by_line(tmp_path: Path) -> None:
    rows = [("ok@example.org", "Ok"), ("not-an-email", "Bad"), ("ok@example.org", "Twice")]  # CSV lines 2, 3, 4
    path = build_campaign(tmp_path, supporters=rows)
    report = validate(load_spec(path), file=path)
    assert [(p.where, p.field, p.severity, p.message) for p in report.problems] == [
        ("line 3", "email", "error", "not a valid email address"),
        ("line 4", "email", "warning", "duplicate of line 2: no copy for this row"),
    ]
    assert [row.line for row in report.supporters] == [2]


def test_csv_without_email_column(tmp_path: Path) -> None:
    path = build_campaign(tmp_path, csv_text="mail,name\na@example.org,A\n")
    report = validate(load_spec(path), file=path)
    [problem] = report.errors
    assert (problem.where, problem.field) == ("supporters", "csv")
    assert problem.message.endswith(
        "no email column (the header has: 'mail', 'name'); name it email, e-mail or email address, "
        "or map it with --map 'HEADER=email'"
    )


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("+86 10 6307 0900", "CN", "+861063070900"),
        ("010 6307 0900", "CN", "+861063070900"),  # national format in the addressee's country
        ("+44 20 7946 0958", "CN", "+442079460958"),
    ],
)
def test_numbers_parse_to_e164(raw: str, country: str, expected: str) -> None:
    assert check_number(raw, country, file="f", where="w", field="fax[0]") == (expected, None)


def test_invalid_number_without_sound_suggestion() -> None:
    value, problem = check_number("+86 12", "CN", file="f", where="w", field="fax[0]")
    assert value is None and problem is not None
    assert problem.suggestion is None
    assert "'+86 12'" in problem.message


@pytest.mark.parametrize(
    ("template", "line", "words"),
    [
        ("Dear {{ to.name }},\n\n{{ minister }}\n", "line 3", "undefined variable"),
        ("Dear {{ to.name }},\n{% if %}\n", "line 2", "syntax error"),
        ("Dear {{ to.name }},\n\n\n{{ ''.__class__.__mro__ }}\n", "line 4", "sandbox"),
    ],
)
def test_template_problems_are_reported_with_their_line(tmp_path: Path, template: str, line: str, words: str) -> None:
    path = build_campaign(tmp_path, template=template)
    report = validate(load_spec(path), file=path)
    assert [(p.where, p.field) for p in report.errors] == [("letter template", line)]
    assert words in report.errors[0].message
    assert report.errors[0].file.endswith("letter.txt.j2")


def test_malformed_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from dispatcher.domain.errors import SettingsError
    from dispatcher.domain.settings import load_settings

    monkeypatch.setenv("DISPATCH_MAX_ATTEMPTS", "eight")
    with pytest.raises(SettingsError, match="DISPATCH_MAX_ATTEMPTS"):
        load_settings()


# every text the ledger keeps in a bounded column: (builder field, where it goes, the column's length)
BOUNDED = [
    ("title", "campaign", 300),
    ("subject", "letter", 300),
    ("name", "to", 200),
    ("title", "to", 200),
    ("organisation", "to", 300),
    ("salutation", "to", 300),
    ("timezone", "to", 64),
    ("fax", "to", 320),
    ("email", "to", 320),
]


def _with(tmp_path: Path, table: str, key: str, value: str) -> Path:
    if table == "to":
        return build_campaign(tmp_path, to=[xi_jinping(**{key: [value] if key in ("fax", "email") else value})])
    if table == "letter":
        return build_campaign(tmp_path, letter={"subject": value, "template": "letter.txt.j2"})
    return build_campaign(tmp_path, **{key: value})


@pytest.mark.parametrize(("key", "table", "length"), BOUNDED)
def test_a_text_longer_than_its_column_is_refused_naming_it(tmp_path: Path, key: str, table: str, length: int) -> None:
    with pytest.raises(CampaignFileError) as refused:
        load_spec(_with(tmp_path, table, key, "x" * (length + 1)))
    text = "\n".join(str(p) for p in refused.value.problems)
    assert key in text and f"at most {length} characters" in text, text


def test_texts_at_their_columns_length_load_on_postgresql_too(factory: sessionmaker[Session], tmp_path: Path) -> None:
    # before: a 400-character title passed validation and PostgreSQL refused the load (StringDataRightTruncation)
    path = build_campaign(
        tmp_path,
        title="T" * 300,
        to=[xi_jinping(name="N" * 200, title="t" * 200, organisation="o" * 300, salutation="s" * 300)],
    )
    spec = load_spec(path)
    with transaction(factory) as session:
        result = load_campaign(session, spec, validate(spec, file=path), source=path, skip_invalid=True)
    assert result.status == "created"
