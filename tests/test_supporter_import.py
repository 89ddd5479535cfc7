"""Reading a supporter list (dispatcher/domain/supporter_import.py) and importing it into the ledger, on
SQLite and PostgreSQL; the one CSV writer (dispatcher/domain/csv_out.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.csv_out import inert, write_csv
from dispatcher.domain.db import transaction
from dispatcher.domain.models import Supporter, SupporterList
from dispatcher.domain.supporter_import import (
    ImportResult,
    MemberRow,
    Rejected,
    SupporterFileError,
    import_rows,
    parse_mapping,
    read_rows,
)

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

# Every trap at once: a BOM, CRLF, header aliases in another case, first/last name columns, a quoted line
# break in a name (lines 3-4: the next record starts on line 5), a duplicate differing by case, consent
# yes/no/missing/unreadable, a formula, HTML, a bad email, date and locale, too many cells, a blank line.
HOSTILE = (
    "\ufeff"
    "E-Mail,First Name,Last Name,Consent,Consent_Date,Locale,Member ID\r\n"  # 1
    "Ada@Example.org,Ada,Lovelace,yes,2026-11-02,en,A1\r\n"  # 2
    'grace@example.net,"Grace\r\nBrewster",Hopper,yes,,fr,G2\r\n'  # 3-4
    "ADA@example.ORG,Ada,Again,yes,,,A3\r\n"  # 5
    "alan@example.com,Alan,Turing,no,,,T4\r\n"  # 6
    "katherine@example.org,Katherine,Johnson,,,,K5\r\n"  # 7
    'mallory@example.org,"=HYPERLINK(""http://x"",""y"")",Formula,maybe,,,M6\r\n'  # 8
    "bold@example.org,<b>Bold</b>,Name,Y,2026-11-05T10:30:00+01:00,pt-br,B7\r\n"  # 9
    "not-an-email,Xavier,Ymir,yes,,,X8\r\n"  # 10
    "dee@example.org,Dee,Date,yes,2026-13-45,,D9\r\n"  # 11
    "lou@example.org,Lou,Cale,yes,,english!,L10\r\n"  # 12
    "max@example.org,Max,Many,yes,,,M11,extra,more\r\n"  # 13
    "\r\n"  # 14
    "true@example.org,,,TRUE,2026-11-06,,\r\n"  # 15
).encode()

HOSTILE_MEMBERS = [
    MemberRow(
        line=2,
        email="ada@example.org",
        name="Ada Lovelace",
        locale="en",
        consent_at=datetime(2026, 11, 2, tzinfo=UTC),
        fields={"Member ID": "A1"},
    ),
    MemberRow(
        line=9,
        email="bold@example.org",
        name="<b>Bold</b> Name",
        locale="pt-BR",
        consent_at=datetime(2026, 11, 5, 9, 30, tzinfo=UTC),
        fields={"Member ID": "B7"},
    ),
    MemberRow(line=15, email="true@example.org", name=None, consent_at=datetime(2026, 11, 6, tzinfo=UTC)),
]
HOSTILE_REJECTED = [
    (
        3,
        "invalid-field",
        "name contains U+000D (CARRIAGE RETURN) at character 6: "
        "control characters and bidirectional controls are not allowed in one line",
    ),
    (5, "duplicate", "duplicate of line 2"),
    (6, "consent-refused", "consent refused"),
    (7, "consent-missing", "no consent given (the consent cell is empty)"),
    (8, "consent-missing", "consent is not yes/no, true/false, 1/0 or y/n"),
    (10, "invalid-email", "not a valid email address"),
    (
        11,
        "invalid-consent-date",
        "consent_date is not an ISO date or date-time (2026-11-02, 2026-11-02T10:30:00+01:00)",
    ),
    (12, "invalid-locale", "locale is not a language tag like en, fr or pt-BR"),
    (13, "malformed-row", "9 cells, but the header has 7 columns"),
]
PERSONAL = ("ada", "lovelace", "grace", "brewster", "hopper", "alan", "turing", "katherine", "mallory", "xavier")


def read(content: bytes, **kwargs: object) -> tuple[list[MemberRow], list[Rejected]]:
    rows = list(read_rows(io.BytesIO(content), source="list.csv", **kwargs))  # type: ignore[arg-type]
    return [r for r in rows if isinstance(r, MemberRow)], [r for r in rows if isinstance(r, Rejected)]


def refused(content: bytes, **kwargs: object) -> str:
    with pytest.raises(SupporterFileError) as info:
        read(content, **kwargs)
    return str(info.value)


def members(factory: sessionmaker[Session], list_name: str) -> list[tuple[object, ...]]:
    with factory() as session:
        return [
            (s.email, s.name, s.locale, s.consent, s.consent_at, s.consent_source, s.fields)
            for s in session.scalars(
                select(Supporter).join(SupporterList).where(SupporterList.name == list_name).order_by(Supporter.email)
            )
        ]


def run_import(factory: sessionmaker[Session], content: bytes, list_name: str = "petition") -> ImportResult:
    with transaction(factory) as session:
        return import_rows(session, list_name, read_rows(io.BytesIO(content), source="list.csv"), now=NOW)


# --- reading -------------------------------------------------------------------------------------------


def test_hostile_file_rows_and_rejections_by_line_with_reasons_free_of_personal_data() -> None:
    found, rejected = read(HOSTILE)
    assert found == HOSTILE_MEMBERS
    assert [(r.line, r.kind, r.reason) for r in rejected] == HOSTILE_REJECTED
    for row in rejected:
        assert not any(word in row.reason.lower() for word in PERSONAL), row.reason
    # a refusal keeps its (normalised) address, so that an import withdraws that member's consent
    assert [(r.line, r.email) for r in rejected if r.kind == "consent-refused"] == [(6, "alan@example.com")]
    # the rejected row's cells as the file gave them, by header, for the --rejects file
    assert rejected[4].cells == {
        "E-Mail": "mallory@example.org",
        "First Name": '=HYPERLINK("http://x","y")',
        "Last Name": "Formula",
        "Consent": "maybe",
        "Consent_Date": "",
        "Locale": "",
        "Member ID": "M6",
    }
    assert rejected[8].cells["column 9"] == "more"


def test_lone_cr_and_lf_line_ends_count_as_physical_lines() -> None:
    content = b'email,consent,note\ra@example.org,yes,"one\rtwo"\nbad,yes,x\r\nb@example.org,yes,\n'
    found, rejected = read(content)
    assert [(r.line, r.email, r.fields) for r in found] == [
        (2, "a@example.org", {"note": "one\rtwo"}),
        (5, "b@example.org", {}),
    ]
    assert [(r.line, r.kind) for r in rejected] == [(4, "invalid-email")]


def test_name_alone_wins_over_first_and_last_and_given_family_aliases() -> None:
    content = b"Email Address,Given,Family,Name,consent\na@example.org,Ada,Lovelace,,1\nb@example.org,B,C,Bea Cee,y\n"
    found, _ = read(content)
    assert [(r.email, r.name) for r in found] == [("a@example.org", "Ada Lovelace"), ("b@example.org", "Bea Cee")]


def test_mapping_names_other_headers_case_insensitively() -> None:
    content = "E-Mail Adresse,Vorname,Nachname,Einwilligung,Sprache\nx@example.de,José,Müller,ja?,de\n".encode()
    mapping = parse_mapping("e-mail adresse=email, Vorname=first_name,NACHNAME=last_name,Sprache=locale")
    assert mapping == {
        "e-mail adresse": "email",
        "Vorname": "first_name",
        "NACHNAME": "last_name",
        "Sprache": "locale",
    }
    found, rejected = read(content, mapping=mapping)
    assert found == []
    # "Einwilligung" is not mapped: it is kept as a custom column, and there is no consent column
    assert [(r.line, r.kind, r.reason) for r in rejected] == [(2, "consent-missing", "no consent column")]
    with_consent = read(content.replace(b"ja?", b"yes"), mapping={**mapping, "Einwilligung": "consent"})[0]
    assert with_consent == [MemberRow(line=2, email="x@example.de", name="José Müller", locale="de")]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("Vorname", "--map: 'Vorname' is not HEADER=COLUMN"),
        ("Vorname=vorname", "--map: 'vorname' is not a column an import reads (email, name, first_name, "
         "last_name, consent, consent_date, consent_source, locale)"),
    ],
)  # fmt: skip
def test_a_malformed_mapping_is_refused(spec: str, message: str) -> None:
    with pytest.raises(SupporterFileError) as info:
        parse_mapping(spec)
    assert str(info.value) == message


def test_file_level_refusals_name_the_file_and_what_is_wrong() -> None:
    assert refused(b"") == "list.csv: the file is empty: it needs a header row (email,name,consent,...)"
    assert refused(b"Mail,Name\nx@example.org,X\n") == (
        "list.csv: line 1: no email column (the header has: 'Mail', 'Name'); "
        "name it email, e-mail or email address, or map it with --map 'HEADER=email'"
    )
    # a file without a header row: its first row is data, and never quoted in the message
    assert refused(b"ada@example.org,Ada Lovelace,yes\n") == (
        "list.csv: line 1: no email column, and line 1 holds an email address: the file seems to have no "
        "header row; add one (email,name,consent,...)"
    )
    assert refused(b"email,E-mail\n") == "list.csv: line 1: columns 1 ('email') and 2 ('E-mail') are both email"
    assert refused(b"email,x,X\n") == "list.csv: line 1: columns 2 ('x') and 3 ('X') have the same name"
    assert refused(b"email\n", mapping={"Mail": "email"}) == (
        "list.csv: line 1: --map names 'Mail', which the header does not have (its columns: 'email')"
    )
    assert refused(("email," + ",".join(f"c{i}" for i in range(300)) + "\n").encode()) == (
        "list.csv: line 1: the header has 301 columns; at most 200"
    )


def test_a_byte_that_is_not_utf8_refuses_the_file_naming_line_and_offset_then_decodes_as_told() -> None:
    content = "email,name,consent\r\nann@example.org,Ann,yes\r\njose@example.org,José,yes\r\n".encode("latin-1")
    assert refused(content) == (
        "list.csv: line 3: byte 0xe9 at offset 65 is not UTF-8; nothing was imported. If the file is in "
        "another encoding, name it: --encoding latin-1 (or cp1252, ...)"
    )
    found, _ = read(content, encoding="latin-1")
    assert [(r.line, r.name) for r in found] == [(2, "Ann"), (3, "José")]
    assert refused(b"email\n", encoding="no-such-codec") == "list.csv: unknown encoding 'no-such-codec'"
    assert refused(b"email\n", encoding="base64") == "list.csv: unknown encoding 'base64'"
    utf16 = "email,consent\na@example.org,yes\n".encode("utf-16")
    assert refused(utf16) == (
        "list.csv: the file starts with a UTF-16 byte-order mark: save it as UTF-8, or name the encoding: "
        "--encoding utf-16"
    )
    assert [r.email for r in read(utf16, encoding="utf-16")[0]] == ["a@example.org"]


def test_oversized_cells_and_rows_are_rejected_rows_and_reading_goes_on() -> None:
    big_cell = "G" * 200_000
    long_cell = '"' + ("x" * 999 + "\n") * 120 + '"'  # 120,002 characters on 121 lines
    content = (
        "email,consent,note\n"
        f"a@example.org,yes,{big_cell}\n"  # 2: a cell over the csv module's limit
        f"b@example.org,yes,{','.join([long_cell] * 10)}\n"  # 3-1203: no cell over that limit, the row over 1 MiB
        "c@example.org,yes,\n"  # 1204
    ).encode()
    found, rejected = read(content)
    assert [(r.line, r.kind, r.reason) for r in rejected][:2] == [
        (2, "malformed-row", "not valid CSV: field larger than field limit (131072)"),
        (3, "malformed-row", "not valid CSV: the row is longer than 1048576 characters"),
    ]
    assert [(r.line, r.email) for r in found] == [(1204, "c@example.org")]


def test_a_physical_line_over_the_limit_is_skipped_without_being_held() -> None:
    content = b"email,consent\n" + b"x," * 600_000 + b"\nc@example.org,yes\n"
    found, rejected = read(content)
    assert [(r.line, r.kind, r.reason) for r in rejected] == [
        (2, "malformed-row", "not valid CSV: the row is longer than 1048576 characters")
    ]
    assert [(r.line, r.email) for r in found] == [(3, "c@example.org")]


# --- importing -----------------------------------------------------------------------------------------


def test_import_writes_members_with_consent_and_reports_exactly(factory: sessionmaker[Session]) -> None:
    result = run_import(factory, HOSTILE)
    assert result == ImportResult(
        list_name="petition",
        created=True,
        added=3,
        rejected=Counter(
            {
                "consent-missing": 2,
                "invalid-field": 1,
                "duplicate": 1,
                "consent-refused": 1,
                "invalid-email": 1,
                "invalid-consent-date": 1,
                "invalid-locale": 1,
                "malformed-row": 1,
            }
        ),
    )
    assert result.summary() == (
        "list 'petition': 3 added, 0 updated, 0 unchanged, 0 consent withdrawn, 9 rows rejected"
    )
    assert members(factory, "petition") == [
        ("ada@example.org", "Ada Lovelace", "en", True, datetime(2026, 11, 2, tzinfo=UTC), None, {"Member ID": "A1"}),
        (
            "bold@example.org",
            "<b>Bold</b> Name",
            "pt-BR",
            True,
            datetime(2026, 11, 5, 9, 30, tzinfo=UTC),
            None,
            {"Member ID": "B7"},
        ),
        ("true@example.org", None, None, True, datetime(2026, 11, 6, tzinfo=UTC), None, {}),
    ]
    # the same file again changes nothing
    again = run_import(factory, HOSTILE)
    assert (again.added, again.updated, again.unchanged, again.withdrawn, again.changed) == (0, 0, 3, 0, False)
    assert sum(again.rejected.values()) == 9


UPDATE = (
    b"email,name,consent,consent_source\n"
    b"ada@example.org,,no,\n"  # withdraws Ada's consent
    b"BOLD@example.org,Bold Name,yes,web form\n"  # a new name and a source: updated
    b"true@example.org,,yes,\n"  # empty cells keep what the list holds: unchanged
    b"alan@example.com,Alan Turing,no,\n"  # a refusal from someone not on the list: never added
    b"new@example.org,New,yes,\n"  # added; no consent_date: consent recorded at the import
)


def test_consent_no_withdraws_an_existing_member_and_a_refusal_never_adds(factory: sessionmaker[Session]) -> None:
    run_import(factory, HOSTILE)
    result = run_import(factory, UPDATE)
    assert result == ImportResult(
        list_name="petition", added=1, updated=1, unchanged=1, withdrawn=1, rejected=Counter({"consent-refused": 1})
    )
    assert result.summary() == "list 'petition': 1 added, 1 updated, 1 unchanged, 1 consent withdrawn, 1 row rejected"
    assert members(factory, "petition") == [
        ("ada@example.org", "Ada Lovelace", "en", False, datetime(2026, 11, 2, tzinfo=UTC), None, {"Member ID": "A1"}),
        (
            "bold@example.org",
            "Bold Name",
            "pt-BR",
            True,
            datetime(2026, 11, 5, 9, 30, tzinfo=UTC),
            "web form",
            {"Member ID": "B7"},
        ),
        ("new@example.org", "New", None, True, NOW, None, {}),
        ("true@example.org", None, None, True, datetime(2026, 11, 6, tzinfo=UTC), None, {}),
    ]
    again = run_import(factory, UPDATE)
    assert (again.added, again.updated, again.unchanged, again.withdrawn) == (0, 0, 4, 0)
    # consent given again, without a date: recorded at this import
    later = datetime(2026, 12, 2, tzinfo=UTC)
    with transaction(factory) as session:
        back = import_rows(
            session, "petition", read_rows(io.BytesIO(b"email,consent\nada@example.org,yes\n"), source="x"), now=later
        )
    assert (back.updated, back.withdrawn) == (1, 0)
    assert members(factory, "petition")[0][3:5] == (True, later)


def test_rejected_rows_go_to_on_rejected_and_other_lists_are_untouched(factory: sessionmaker[Session]) -> None:
    run_import(factory, b"email,consent\nalan@example.com,yes\n", list_name="other")
    seen: list[tuple[int, str]] = []
    with transaction(factory) as session:
        rows = read_rows(io.BytesIO(HOSTILE), source="list.csv")
        import_rows(session, "petition", rows, now=NOW, on_rejected=lambda r: seen.append((r.line, r.kind)))
    assert seen == [(line, kind) for line, kind, _ in HOSTILE_REJECTED]
    assert [m[:4] for m in members(factory, "other")] == [("alan@example.com", None, None, True)]


def test_a_file_level_error_midway_leaves_nothing_written(factory: sessionmaker[Session]) -> None:
    content = b"email,consent\n" + b"".join(b"p%d@example.org,yes\n" % i for i in range(2500)) + b"bad,\xff\n"
    with pytest.raises(SupporterFileError, match=r"^list.csv: line 2502: byte 0xff at offset \d+ is not UTF-8"):
        run_import(factory, content)
    with factory() as session:
        assert session.scalars(select(SupporterList)).all() == []
        assert session.scalars(select(Supporter)).all() == []


def test_import_in_batches_adds_and_finds_members_across_batches(factory: sessionmaker[Session]) -> None:
    rows = b"".join(b"p%d@example.org,P %d,yes\n" % (i, i) for i in range(2345))
    first = run_import(factory, b"email,name,consent\n" + rows)
    assert (first.added, first.unchanged) == (2345, 0)
    changed = rows.replace(b"P 2000,", b"Changed,")
    second = run_import(factory, b"email,name,consent\n" + changed + b"extra@example.org,,yes\n")
    assert (second.added, second.updated, second.unchanged) == (1, 1, 2344)
    with factory() as session:
        assert session.scalar(select(Supporter.name).where(Supporter.email == "p2000@example.org")) == "Changed"


MEMORY_SCRIPT = """
import json, re, sys, time
from datetime import UTC, datetime
from pathlib import Path
from dispatcher.domain import db
from dispatcher.domain.supporter_import import import_rows, read_rows

def status(field):  # kB, from Linux's /proc/self/status
    return int(re.search(field + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))

url, path = sys.argv[1], sys.argv[2]
factory = db.session_factory(db.make_engine(url))
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the present size
before = status("VmRSS")
start = time.perf_counter()
with open(path, "rb") as stream, db.transaction(factory) as session:
    result = import_rows(session, "big", read_rows(stream, source=path), now=datetime.now(UTC))
seconds = time.perf_counter() - start
print(json.dumps({"added": result.added, "grown": (status("VmHWM") - before) * 1024, "seconds": seconds}))
"""


def test_twenty_thousand_rows_import_in_bounded_memory(db_url: str, tmp_path: Path) -> None:
    """A small version of bench/supporter_import.py (200,000 rows): the process's peak resident memory grows
    by a bounded amount during the import (Linux's VmHWM, reset before it; tracemalloc would count Python's
    allocations alone, and makes this import several times slower)."""
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as out:
        out.write("email,first_name,last_name,consent,consent_date,locale,postcode\n")
        for i in range(20_000):
            out.write(f"supporter{i}@example.org,Given{i},Family{i},yes,2026-11-02,en,{10000 + i}\n")
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, db_url, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    measured = json.loads(done.stdout)
    print(f"20,000 rows: {measured['seconds']:.1f} s, peak RSS grew {measured['grown'] / 2**20:.1f} MiB")
    assert measured["added"] == 20_000
    assert measured["grown"] < 60 * 2**20


# --- the one CSV writer --------------------------------------------------------------------------------


def test_formula_cells_are_made_inert() -> None:
    for cell in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "\nx", "\x00x", "\uff1d1+1"):
        assert inert(cell) == "'" + cell
    for cell in ("", "a=1", "'=1", " =1", "1-2", "ada@example.org"):
        assert inert(cell) == cell


def test_write_csv_writes_inert_cells_atomically_and_privately(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    with write_csv(path) as writer:
        writer.writerow(["line", "cell"])
        writer.writerow([8, '=HYPERLINK("http://x","y")'])
        writer.writerow([-1, "-1"])
    assert path.read_bytes() == (b'\xef\xbb\xbfline,cell\r\n8,"\'=HYPERLINK(""http://x"",""y"")"\r\n-1,\'-1\r\n')
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(RuntimeError), write_csv(tmp_path / "broken.csv") as writer:
        writer.writerow(["a"])
        raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
