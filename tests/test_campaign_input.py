"""Campaign input under misconfiguration and hostile input: every problem named, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatcher.domain.campaign_file import letter_source, load_spec
from dispatcher.domain.errors import CampaignFileError, Problem
from dispatcher.domain.validation import Report, check_email, check_number, validate
from dispatcher.processes.cli import app

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "config" / "campaigns" / "north-korean-refugees"
FIXED_SEED = {"+011 10 6238 1025": "+86 10 6238 1025"}  # the seed without its one malformed number


def campaign(
    folder: Path,
    replace: dict[str, str] | None = None,
    *,
    template: str | bytes | None = None,
    supporters: str | bytes | None = None,
) -> Path:
    """The example campaign (its malformed fax fixed) in ``folder``, with textual replacements."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (EXAMPLE_DIR / "campaign.toml").read_text(encoding="utf-8")
    for old, new in {**FIXED_SEED, **(replace or {})}.items():
        assert old in text, old
        text = text.replace(old, new)
    _write(folder / "letter.txt.j2", template if template is not None else (EXAMPLE_DIR / "letter.txt.j2").read_bytes())
    _write(
        folder / "supporters.csv",
        supporters if supporters is not None else (EXAMPLE_DIR / "supporters.csv").read_bytes(),
    )
    path = folder / "campaign.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _write(path: Path, content: str | bytes) -> None:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)


def check(path: Path) -> Report:
    return validate(load_spec(path), file=path)


def placed(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.where, p.field) for p in problems if p.severity == "error"]


# --- 5. paths stay inside the campaign's folder, are regular files, and have a bounded size -----------


def test_template_outside_the_campaign_folder_is_refused(tmp_path: Path) -> None:
    climb = "../" * 16 + "etc/passwd"  # enough to reach / from any temporary folder
    path = campaign(tmp_path / "c", {'template = "letter.txt.j2"': f'template = "{climb}"'})
    report = check(path)
    assert placed(report.errors) == [("letter", "template")]
    problem = report.errors[0]
    assert problem.file == str(path)
    assert f"{climb!r}" in problem.message
    assert "outside the campaign's folder" in problem.message
    assert "root:" not in report.template_source


def test_absolute_csv_path_is_refused(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", {'csv = "supporters.csv"': 'csv = "/etc/shadow"'})
    report = check(path)
    assert placed(report.errors) == [("supporters", "csv")]
    assert "'/etc/shadow'" in report.errors[0].message
    assert "outside the campaign's folder" in report.errors[0].message
    assert report.supporters == []


def test_symlink_leading_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("Dear {{ to.name }}, the secret\n", encoding="utf-8")
    path = campaign(tmp_path / "c")
    (tmp_path / "c" / "letter.txt.j2").unlink()
    (tmp_path / "c" / "letter.txt.j2").symlink_to(outside)
    report = check(path)
    assert placed(report.errors) == [("letter", "template")]
    assert "outside the campaign's folder" in report.errors[0].message
    assert report.template_source == ""


def test_symlink_inside_the_folder_is_followed(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c")
    folder = tmp_path / "c"
    (folder / "letters").mkdir()
    (folder / "letter.txt.j2").rename(folder / "letters" / "real.j2")
    (folder / "letter.txt.j2").symlink_to(folder / "letters" / "real.j2")
    assert check(path).ok


def test_device_as_csv_is_refused(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c")
    (tmp_path / "c" / "supporters.csv").unlink()
    (tmp_path / "c" / "supporters.csv").symlink_to("/dev/zero")
    report = check(path)
    assert placed(report.errors) == [("supporters", "csv")]
    assert "outside the campaign's folder" in report.errors[0].message


def test_fifo_and_folder_are_not_regular_files(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c")
    (tmp_path / "c" / "supporters.csv").unlink()
    os.mkfifo(tmp_path / "c" / "supporters.csv")  # opening it for reading would wait for a writer
    (tmp_path / "c" / "letter.txt.j2").unlink()
    (tmp_path / "c" / "letter.txt.j2").mkdir()
    report = check(path)
    assert placed(report.errors) == [("letter", "template"), ("supporters", "csv")]
    assert all("not a regular file" in p.message for p in report.errors)


def test_template_over_256_kib_is_refused(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", template="x" * (256 * 1024 + 1))
    report = check(path)
    assert placed(report.errors) == [("letter", "template")]
    assert "larger than 256 KiB" in report.errors[0].message


def test_template_of_exactly_256_kib_is_read(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", template="x" * (256 * 1024))
    assert check(path).ok


def test_csv_over_its_limit_is_refused(tmp_path: Path) -> None:
    row = "someone@example.org,Someone\n"
    path = campaign(tmp_path / "c", supporters="email,name\n" + row * (16 * 1024 * 1024 // len(row) + 1))
    report = check(path)
    assert placed(report.errors) == [("supporters", "csv")]
    assert "larger than 16 MiB" in report.errors[0].message
    assert report.supporters == []


def test_campaign_file_over_1_mib_is_refused(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", {"[campaign]\n": "[campaign]\n" + "# padding\n" * 110_000})
    with pytest.raises(CampaignFileError) as info:
        load_spec(path)
    assert [p.message for p in info.value.problems] == ["larger than 1 MiB: a campaign file is at most 1 MiB"]
    assert info.value.problems[0].file == str(path)


@pytest.mark.parametrize("name", ["/dev/zero", "/dev/null"])
def test_campaign_file_that_is_a_device_is_refused(name: str) -> None:
    with pytest.raises(CampaignFileError) as info:
        load_spec(Path(name))
    assert [p.message for p in info.value.problems] == ["not a regular file (a character device)"]


def test_campaign_file_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CampaignFileError) as info:
        load_spec(tmp_path)
    assert [p.message for p in info.value.problems] == ["not a regular file (a folder)"]


def test_missing_campaign_file(tmp_path: Path) -> None:
    with pytest.raises(CampaignFileError) as info:
        load_spec(tmp_path / "nowhere.toml")
    assert [p.message for p in info.value.problems] == ["file not found"]


def test_rendering_reads_the_template_through_the_same_guard(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", {'template = "letter.txt.j2"': 'template = "/etc/hostname"'})
    spec = load_spec(path)
    with pytest.raises(CampaignFileError) as info:
        letter_source(spec, path.parent)
    assert [(p.where, p.field) for p in info.value.problems] == [("letter", "template")]


# --- 6. not UTF-8: an error naming the file and the byte offset -------------------------------------


def test_utf16_campaign_file(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c")
    path.write_text(path.read_text(encoding="utf-8"), encoding="utf-16")
    with pytest.raises(CampaignFileError) as info:
        load_spec(path)
    [problem] = info.value.problems
    assert problem.file == str(path)
    assert problem.message == "not UTF-8: it starts with a UTF-16 byte-order mark; save it as UTF-8"


def test_utf16_without_bom_is_caught_by_its_nul_bytes(tmp_path: Path) -> None:
    path = tmp_path / "campaign.toml"
    path.write_bytes("[campaign]\n".encode("utf-16-le"))
    with pytest.raises(CampaignFileError) as info:
        load_spec(path)
    assert [p.message for p in info.value.problems] == [
        "not UTF-8 text: a NUL byte at offset 1 (is it UTF-16 or a binary file?)"
    ]


def test_binary_campaign_file_names_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "campaign.toml"
    path.write_bytes(b'[campaign]\nname = "\xff\xfe"\n')
    with pytest.raises(CampaignFileError) as info:
        load_spec(path)
    assert [p.message for p in info.value.problems] == [
        "not UTF-8: byte 0xff at offset 19 is not valid UTF-8; save the file as UTF-8"
    ]


def test_latin1_template_names_the_file_and_offset(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", template="Dear {{ to.name }},\n\xe9t\xe9\n".encode("latin-1"))
    report = check(path)
    [problem] = report.errors
    assert (problem.file, problem.where, problem.field) == (str(path), "letter", "template")
    assert problem.message == (
        f"{tmp_path / 'c' / 'letter.txt.j2'}: "
        "not UTF-8: byte 0xe9 at offset 20 is not valid UTF-8; save the file as UTF-8"
    )


def test_utf16_supporters_csv(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", supporters="email,name\na@example.org,A\n".encode("utf-16"))
    report = check(path)
    assert placed(report.errors) == [("supporters", "csv")]
    assert "not UTF-8: it starts with a UTF-16 byte-order mark" in report.errors[0].message
    assert report.supporters == []


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", supporters="\ufeffemail,name,consent\na@example.org,A,yes\n")
    path.write_text("\ufeff" + path.read_text(encoding="utf-8"), encoding="utf-8")
    report = check(path)
    assert report.ok, [str(p) for p in report.problems]
    assert [s.email for s in report.supporters] == ["a@example.org"]


# --- 2. shape errors and content errors are reported together ---------------------------------------


def shape_and_content(path: Path) -> list[Problem]:
    with pytest.raises(CampaignFileError) as info:
        load_spec(path)
    return info.value.problems


GUO = 'timezone = "Asia/Shanghai"\nphone = ["+86 10 6626 2114"]'
GUO_TIMEZONE = {GUO: GUO.replace("Asia/Shanghai", "Asia/Shangai")}


def test_bad_choice_and_unknown_key_do_not_hide_content_errors(tmp_path: Path) -> None:
    path = campaign(
        tmp_path / "c", {'urgency = "urgent"': 'urgency = "high"\nroute_ordr = "fax-first"', **GUO_TIMEZONE}
    )
    problems = shape_and_content(path)
    assert [(p.where, p.field, p.message, p.suggestion) for p in problems] == [
        ("campaign.urgency", "", "'high' is not one of 'normal', 'urgent'", None),
        ("campaign.route_ordr", "", "unknown key 'route_ordr' in table 'campaign'", "route_order"),
        (
            "cc[0] (Guo Shengkun)",
            "timezone",
            "unknown timezone 'Asia/Shangai' (use an IANA name such as 'Asia/Shanghai')",
            "Asia/Shanghai",
        ),
    ]
    assert f"{path}: campaign.urgency: 'high' is not one of 'normal', 'urgent'" in str(problems[0])


def test_unknown_key_without_a_close_match_lists_the_known_keys(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", {"[supporters]\n": "[supporters]\nzzz = 1\n"})
    [problem] = shape_and_content(path)
    assert (problem.where, problem.message, problem.suggestion) == (
        "supporters.zzz",
        "unknown key 'zzz' in table 'supporters' (its keys: copies, csv, list_name, lists, translations)",
        None,
    )


def test_unknown_table_at_the_top_level(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", {"[sender]\n": "[sendr]\n", **GUO_TIMEZONE})
    problems = shape_and_content(path)
    assert [(p.where, p.field, p.message, p.suggestion) for p in problems] == [
        ("sender", "", "required, but missing", None),
        ("sendr", "", "unknown key 'sendr' at the top level", "sender"),
        (
            "cc[0] (Guo Shengkun)",
            "timezone",
            "unknown timezone 'Asia/Shangai' (use an IANA name such as 'Asia/Shanghai')",
            "Asia/Shanghai",
        ),
    ]


def test_wrong_shape_of_one_field_keeps_the_rest_of_the_addressee(tmp_path: Path) -> None:
    xi = 'timezone = "Asia/Shanghai"\nfax = ["+86 10 6307 0900", "+86 10 6238 1025"]'
    path = campaign(tmp_path / "c", {xi: 'timezone = "Asia/Shangai"\nfax = "+86 10 6307 0900"'})
    problems = shape_and_content(path)
    assert [(p.where, p.field, p.message) for p in problems] == [
        ("to[0].fax", "", "Input should be a valid list (got '+86 10 6307 0900')"),
        (
            "to[0] (Xi Jinping)",
            "timezone",
            "unknown timezone 'Asia/Shangai' (use an IANA name such as 'Asia/Shanghai')",
        ),
    ]  # and no "no usable electronic route" for to[0]: its fax numbers were not read, not absent


def test_addressee_missing_a_required_key_does_not_hide_the_others(tmp_path: Path) -> None:
    path = campaign(
        tmp_path / "c",
        {'name = "Wang Yi"\n': "", 'email = ["gabzfwz@mps.gov.cn"]': 'email = ["gabzfwz@@mps.gov.cn"]'},
    )
    problems = shape_and_content(path)
    assert [(p.where, p.field) for p in problems] == [
        ("cc[1].name", ""),
        ("cc[0] (Guo Shengkun)", "email[0]"),
        ("cc[0] (Guo Shengkun)", "fax/email"),
    ]
    assert problems[0].message == "required, but missing"


def test_choice_inside_a_list_names_the_allowed_values(tmp_path: Path) -> None:
    path = campaign(
        tmp_path / "c", {'mode = "now"': 'mode = "now"\n[campaign.schedule.office_hours]\ndays = ["mon", "funday"]'}
    )
    [problem] = shape_and_content(path)
    assert (problem.where, problem.message) == (
        "campaign.schedule.office_hours.days[1]",
        "'funday' is not one of 'mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'",
    )


def test_wrong_type_shows_the_value_given(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", {'fax = ["+86 10 6559 1516"]': "fax = [861065591516]"})
    [problem] = shape_and_content(path)
    assert (problem.where, problem.message) == ("cc[1].fax[0]", "Input should be a valid string (got 861065591516)")


def test_letter_with_both_template_and_body(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", {'template = "letter.txt.j2"': 'template = "letter.txt.j2"\nbody = "Hi"'})
    [problem] = shape_and_content(path)
    assert (problem.where, problem.message) == (
        "letter",
        "give exactly one of 'template' (a file) or 'body' (inline)",
    )


def test_validate_command_prints_shape_and_content_errors_together(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", {'urgency = "urgent"': 'urgency = "high"\nurgncy = 1', **GUO_TIMEZONE})
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "campaign", "validate", str(path)],
        env={**os.environ, "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "campaign.urgency: 'high' is not one of 'normal', 'urgent'" in result.stderr
    assert "campaign.urgncy: unknown key 'urgncy' in table 'campaign' (did you mean urgency?)" in result.stderr
    assert "cc[0] (Guo Shengkun): timezone: unknown timezone 'Asia/Shangai'" in result.stderr
    assert "Traceback" not in result.stderr


# --- 3. control characters and bidi overrides in single-line fields ---------------------------------

SINGLE_LINE_FIELDS = [
    # (text in the example, the same with a TOML escape in it, where, field, the character's description)
    (
        'subject = "Detention of nine North Korean refugees"',
        'subject = "Detention\\r\\nBcc: victim@example.org"',
        "letter",
        "subject",
        "U+000D (CARRIAGE RETURN) at character 10",
    ),
    (
        'title = "Detention of nine North Korean refugees"',
        'title = "Detention\\u0000"',
        "campaign",
        "title",
        "U+0000 (NUL) at character 10",
    ),
    (
        'organisation = "Human Rights Watch"',
        'organisation = "Human Rights Watch\\nX-Priority: 1"',
        "sender",
        "organisation",
        "U+000A (LINE FEED) at character 19",
    ),
    (
        'signatory = "Sophie Richardson"',
        'signatory = "Sophie\\u001b[2J"',
        "sender",
        "signatory",
        "U+001B (ESCAPE) at character 7",
    ),
    (
        'signatory_title = "China Director, Asia Division"',
        'signatory_title = "China Director\\u0085"',
        "sender",
        "signatory_title",
        "U+0085 (NEXT LINE) at character 15",
    ),
    (
        'address = ["350 Fifth Avenue, 34th Floor"',
        'address = ["350 Fifth Avenue\\r34th Floor"',
        "sender",
        "address[0]",
        "U+000D (CARRIAGE RETURN) at character 17",
    ),
    (
        'title = "President"',
        'title = "President\\u202e"',
        "to[0] (Xi Jinping)",
        "title",
        "U+202E (RIGHT-TO-LEFT OVERRIDE) at character 10",
    ),
    (
        'salutation = "Dear President Xi Jinping,"',
        'salutation = "Dear President\\u2028Xi Jinping,"',
        "to[0] (Xi Jinping)",
        "salutation",
        "U+2028 (LINE SEPARATOR) at character 15",
    ),
    (
        'organisation = "Ministry of Public Security"',
        'organisation = "Ministry of\\tPublic Security"',
        "cc[0] (Guo Shengkun)",
        "organisation",
        "U+0009 (TAB) at character 12",
    ),
    (
        '"Chaoyang District, Beijing, 100701"',
        '"Chaoyang District,\\u2066 Beijing, 100701"',
        "cc[1] (Wang Yi)",
        "address[1]",
        "U+2066 (LEFT-TO-RIGHT ISOLATE) at character 19",
    ),
]


@pytest.mark.parametrize(("old", "new", "where", "field", "what"), SINGLE_LINE_FIELDS)
def test_control_character_in_a_single_line_field_is_refused(
    tmp_path: Path, old: str, new: str, where: str, field: str, what: str
) -> None:
    report = check(campaign(tmp_path / "c", {old: new}))
    # A character that no letter may hold (ESC, NEL) is also reported where the template prints the field.
    assert [(p.where, p.field, p.message) for p in report.errors if p.where != "letter template"] == [
        (where, field, f"contains {what}: control characters and bidirectional controls are not allowed in one line")
    ]


def test_control_character_in_a_name_is_escaped_where_the_name_is_shown(tmp_path: Path) -> None:
    report = check(campaign(tmp_path / "c", {'name = "Wang Yi"': 'name = "Wang Yi\\r\\n"'}))
    assert [(p.where, p.field) for p in report.errors] == [("cc[1] (Wang Yi\\r\\n)", "name")]


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        ("+86 10 6307 0900\n", "U+000A (LINE FEED) at character 17"),
        ("+86 10 6307\u202e 0900", "U+202E (RIGHT-TO-LEFT OVERRIDE) at character 12"),
    ],
)
def test_control_character_in_a_number_is_refused(raw: str, what: str) -> None:
    value, problem = check_number(raw, "CN", file="f", where="w", field="fax[0]")
    assert value is None and problem is not None
    assert (
        problem.message
        == f"{raw!r} contains {what}: control characters and bidirectional controls are not allowed in one line"
    )


def test_control_character_in_an_email_is_refused() -> None:
    value, problem = check_email("minister@gov.cn\r\nBcc: x@example.org", file="f", where="w", field="email[0]")
    assert value is None and problem is not None
    assert problem.message == (
        "'minister@gov.cn\\r\\nBcc: x@example.org' contains U+000D (CARRIAGE RETURN) at character 16: "
        "control characters and bidirectional controls are not allowed in one line"
    )


def test_letter_body_may_hold_line_breaks_but_not_other_controls(tmp_path: Path) -> None:
    body = 'body = "Dear {{ to.name }},\\r\\n\\tWe write\\n\\u001b[31m at once.\\n"'
    report = check(campaign(tmp_path / "c", {'template = "letter.txt.j2"': body}))
    assert [(p.file, p.where, p.field, p.message) for p in report.errors] == [
        (
            "letter.body",
            "letter template",
            "line 3",
            "contains U+001B (ESCAPE) at character 1: the letter may hold line breaks and tabs, "
            "but no other control characters or bidirectional controls",
        )
    ]


def test_template_file_with_a_bidi_override_names_its_line(tmp_path: Path) -> None:
    report = check(campaign(tmp_path / "c", template="Dear {{ to.name }},\n\nPay \u202eEUR 001\n"))
    [problem] = report.errors
    assert (problem.where, problem.field) == ("letter template", "line 3")
    assert problem.message.startswith("contains U+202E (RIGHT-TO-LEFT OVERRIDE) at character 5:")


def test_supporter_name_with_a_line_break_is_refused_on_its_row(tmp_path: Path) -> None:
    csv_text = 'email,name,consent\nada@example.org,"Ada\nBcc: x@example.org",yes\ngrace@example.org,Grace,yes\n'
    report = check(campaign(tmp_path / "c", supporters=csv_text))
    assert [(p.where, p.field) for p in report.errors] == [("line 2", "name")]  # the line its record starts on
    assert report.errors[0].message.startswith("name contains U+000A (LINE FEED) at character 4:")
    assert [row.email for row in report.supporters] == ["grace@example.org"]
    assert [(row.line, row.kind) for row in report.supporter_rejects] == [(2, "invalid-field")]


# --- 1. exit prefixes: never fixed silently, always a suggestion, and a duplicate when spelled twice ---

NO_PLUS = "an international dialling prefix; write '+' and the country code instead"


@pytest.mark.parametrize(
    ("raw", "country", "message"),
    [
        ("011 86 10 6520 5866", "CN", f"it starts with '011', {NO_PLUS}"),
        ("011 86 10 6520 5866", "US", f"it starts with '011', {NO_PLUS}"),  # the US exit code, read by phonenumbers
        ("00 86 10 6520 5866", "US", f"it starts with '00', {NO_PLUS}"),
        ("00 86 10 6520 5866", "CN", f"it starts with '00', {NO_PLUS}"),
        ("010 86 10 6520 5866", "JP", f"it starts with '010', {NO_PLUS}"),
        ("010 86 10 6520 5866", "CN", f"it starts with '010', {NO_PLUS}"),
        ("0011 86 10 6520 5866", "AU", f"it starts with '0011', {NO_PLUS}"),
        ("0011 86 10 6520 5866", "CN", f"it starts with '0011', {NO_PLUS}"),
        ("810 86 10 6520 5866", "RU", f"it starts with '810', {NO_PLUS}"),
        ("810 86 10 6520 5866", "CN", f"it starts with '810', {NO_PLUS}"),
        ("+00 86 10 6520 5866", "CN", "'+00' is an international dialling prefix, not a country code"),
        ("+011 86 10 6520 5866", "US", "'+011' is an international dialling prefix, not a country code"),
        ("+010 86 10 6520 5866", "CN", "'+010' is an international dialling prefix, not a country code"),
        ("+0011 86 10 6520 5866", "CN", "'+0011' is an international dialling prefix, not a country code"),
        ("+810 86 10 6520 5866", "CN", "'+810' is an international dialling prefix, not a country code"),
    ],
)
def test_exit_prefix_is_an_error_with_the_corrected_number(raw: str, country: str, message: str) -> None:
    value, problem = check_number(raw, country, file="f", where="w", field="fax[0]")
    assert value is None and problem is not None
    assert problem.message == f"{raw!r} is not a valid number: {message}"
    assert problem.suggestion == "+86 10 6520 5866"


def test_seed_prefix_keeps_its_message() -> None:
    _, problem = check_number("+011 10 6238 1025", "CN", file="f", where="w", field="fax[1]")
    assert problem is not None
    assert problem.message == (
        "'+011 10 6238 1025' is not a valid number: '+011' is an international dialling prefix, not a country code"
    )
    assert problem.suggestion == "+86 10 6238 1025"


@pytest.mark.parametrize(
    ("raw", "country", "e164"),
    [
        ("010 6307 0900", "CN", "+861063070900"),
        ("0011 2345 6789", "CN", None),
        ("+81 3 1234 5678", "JP", "+81312345678"),
    ],
)
def test_national_numbers_that_look_like_a_prefix_are_read_as_national(
    raw: str, country: str, e164: str | None
) -> None:
    value, problem = check_number(raw, country, file="f", where="w", field="fax[0]")
    assert value == e164
    if problem is not None:
        assert "dialling prefix" not in problem.message


def test_two_spellings_of_one_number_are_a_duplicate(tmp_path: Path) -> None:
    xi = 'fax = ["+86 10 6307 0900", "+86 10 6238 1025"]'
    report = check(campaign(tmp_path / "c", {xi: 'fax = ["+86 10 6520 5866", "011 86 10 6520 5866"]'}))
    assert [(p.where, p.field, p.message, p.suggestion) for p in report.errors] == [
        (
            "to[0] (Xi Jinping)",
            "fax[1]",
            f"'011 86 10 6520 5866' is not a valid number: it starts with '011', {NO_PLUS}",
            "+86 10 6520 5866",
        ),
        (
            "to[0] (Xi Jinping)",
            "fax[1]",
            "'011 86 10 6520 5866' is listed twice: it is the same number as fax[0] ('+86 10 6520 5866')",
            None,
        ),
    ]


def test_two_valid_spellings_of_one_number_are_a_duplicate(tmp_path: Path) -> None:
    xi = 'fax = ["+86 10 6307 0900", "+86 10 6238 1025"]'
    report = check(campaign(tmp_path / "c", {xi: 'fax = ["+86 10 6307 0900", "010-6307-0900"]'}))
    assert [(p.field, p.message) for p in report.errors] == [
        ("fax[1]", "'010-6307-0900' is listed twice: it is the same number as fax[0] ('+86 10 6307 0900')")
    ]


# --- 7. extensions, vanity letters and look-alike email domains are reported, not normalised ----------


@pytest.mark.parametrize(
    ("raw", "country", "extension"),
    [
        ("+1 202 555 0100 ext. 12", "US", "12"),
        ("+1 202-555-0100;ext=12", "US", "12"),
        ("+86 10 6520 5866 x12", "CN", "12"),
    ],
)
def test_fax_number_with_an_extension_is_an_error(raw: str, country: str, extension: str) -> None:
    value, problem = check_number(raw, country, file="f", where="w", field="fax[0]")
    assert value is None and problem is not None
    assert problem.message == (
        f"{raw!r} has an extension ({extension}): a fax provider cannot dial an extension; "
        "give the fax machine's own number"
    )
    assert problem.suggestion is None


def test_telephone_number_may_have_an_extension(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", {'phone = ["+86 10 6626 2114"]': 'phone = ["+86 10 6626 2114 ext. 5"]'})
    assert check(path).problems == []


@pytest.mark.parametrize(("raw", "country"), [("1-800-FLOWERS", "US"), ("+1 800 FLOWERS", "CN")])
def test_vanity_letters_are_an_error_with_the_digits_suggested(raw: str, country: str) -> None:
    value, problem = check_number(raw, country, file="f", where="w", field="fax[0]")
    assert value is None and problem is not None
    assert problem.message == f"{raw!r} has letters: a fax provider dials digits only"
    assert problem.suggestion == "+1 800-356-9377"


@pytest.mark.parametrize(
    ("raw", "label", "scripts"),
    [
        ("minister@gov.\u0441n", "\u0441n", "Cyrillic and Latin"),  # a Cyrillic U+0441 before a Latin "n"
        ("info@g\u043e\u043egle.com", "g\u043e\u043egle", "Cyrillic and Latin"),
        ("info@\u03b1pple.com", "\u03b1pple", "Greek and Latin"),
    ],
)
def test_mixed_script_domain_label_is_an_error(raw: str, label: str, scripts: str) -> None:
    value, problem = check_email(raw, file="f", where="w", field="email[0]")
    assert value is None and problem is not None
    assert problem.message == (
        f"{raw!r} is not a valid email address: the domain label {label!r} mixes {scripts} letters "
        "(a look-alike of another domain?)"
    )


@pytest.mark.parametrize(
    "raw", ["info@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444", "info@\u4f8b\u3048.jp", "a@xn--80ak6aa92e.com"]
)
def test_single_script_and_japanese_labels_are_accepted(raw: str) -> None:
    value, problem = check_email(raw, file="f", where="w", field="email[0]")
    assert problem is None and value is not None


# --- 8. the sender's From address, and a preview that never writes what validation rejects ------------


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        (
            'email = "china-advocacy@example.org"',
            'email = "Ministry of Foreign Affairs <china-advocacy@example.org>"',
            "email",
            "A display name and angle brackets around the email address are not permitted here.",
        ),
        (
            'email = "china-advocacy@example.org"',
            'email = "china-advocacy@ex\\u0430mple.org"',
            "email",
            "mixes Cyrillic and Latin letters",
        ),
        (
            'reply_to = "china-advocacy@example.org"',
            'reply_to = "\\"minister@mfa.gov.cn\\"@example.org"',
            "reply_to",
            "is not a valid email address",
        ),
        (
            'organisation = "Human Rights Watch"',
            'organisation = "minister@mfa.gov.cn"',
            "organisation",
            "'minister@mfa.gov.cn' is the display name of every email's From: it must not look like an address "
            "(no '@', '<' or '>', nor their full-width forms)",
        ),
        (
            'organisation = "Human Rights Watch"',
            'organisation = "Ministry of Foreign Affairs <press@mfa.gov.cn>"',
            "organisation",
            "must not look like an address",
        ),
        (
            'organisation = "Human Rights Watch"',
            'organisation = "press\\uff20mfa.gov.cn"',  # a FULLWIDTH COMMERCIAL AT
            "organisation",
            "must not look like an address",
        ),
    ],
)
def test_sender_from_tricks_are_refused(tmp_path: Path, old: str, new: str, field: str, words: str) -> None:
    report = check(campaign(tmp_path / "c", {old: new}))
    assert [(p.where, p.field) for p in report.errors] == [("sender", field)]
    assert words in report.errors[0].message


def preview(path: Path, out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["campaign", "preview", str(path), "--pdf", str(out / "out.pdf"), "--eml", str(out / "out.eml")]
    )
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("old", "new", "shown"),
    [
        (
            'email = "china-advocacy@example.org"',
            'email = "HRW <china-advocacy@example.org>"',
            "sender: email: 'HRW <china-advocacy@example.org>' is not a valid email address",
        ),
        (
            'subject = "Detention of nine North Korean refugees"',
            'subject = "Detention\\r\\nBcc: victim@example.org"',
            "letter: subject: contains U+000D (CARRIAGE RETURN)",
        ),
        (
            'organisation = "Human Rights Watch"',
            'organisation = "press@mfa.gov.cn"',
            "sender: organisation: 'press@mfa.gov.cn' is the display name",
        ),
    ],
)
def test_preview_refuses_what_validation_rejects(tmp_path: Path, old: str, new: str, shown: str) -> None:
    path = campaign(tmp_path / "c", {old: new})
    code, output = preview(path, tmp_path)
    assert code == 1, output
    assert shown in output.replace("\n", "")
    assert "preview refused" in output
    assert not (tmp_path / "out.eml").exists() and not (tmp_path / "out.pdf").exists()


def test_preview_goes_on_past_an_invalid_route_and_says_so(tmp_path: Path) -> None:
    path = campaign(tmp_path / "c", {'fax = ["+86 10 6559 1516"]': 'fax = ["+86 10 6559 1516", "+86 12"]'})
    code, output = preview(path, tmp_path)
    assert code == 0, output
    assert "cc[1] (Wang Yi): fax[1]: '+86 12' is not a valid number" in output.replace("\n", "")
    assert (tmp_path / "out.eml").exists() and (tmp_path / "out.pdf").exists()


# --- 9. the supporters CSV reader: malformed CSV is a problem on its line, never a traceback ----------


def test_csv_field_over_the_csv_module_limit_is_a_problem_on_its_line(tmp_path: Path) -> None:
    csv_text = "email,name,consent\nada@example.org,Ada,yes\ngrace@example.org," + "G" * 200_000 + ",yes\n"
    report = check(campaign(tmp_path / "c", supporters=csv_text))
    assert [(p.where, p.field) for p in report.errors] == [("line 3", "")]
    assert report.errors[0].message == "not valid CSV: field larger than field limit (131072)"
    assert [row.email for row in report.supporters] == ["ada@example.org"]
