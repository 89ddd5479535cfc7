"""`dispatch supporters import` and `dispatch supporters lists`, run as a user would, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy import select as sql_select
from typer.testing import CliRunner

from dispatcher.domain.models import Supporter, SupporterList
from dispatcher.domain.settings import get_settings
from dispatcher.processes.cli import app

from .spawn import base_env
from .test_supporter_import import HOSTILE, UPDATE

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

LATIN1 = "email,name,consent\r\nann@example.org,Ann,yes\r\njose@example.org,José,yes\r\n".encode("latin-1")
LATIN1_REFUSED = (
    "line 3: byte 0xe9 at offset 65 is not UTF-8; nothing was imported. If the file is in another encoding, "
    "name it: --encoding latin-1 (or cp1252, ...)"
)

REJECTS = (
    "\ufeffline,kind,reason,E-Mail,First Name,Last Name,Consent,Consent_Date,Locale,Member ID\r\n"
    "3,invalid-field,name contains U+000D (CARRIAGE RETURN) at character 6: control characters and bidirectional "
    'controls are not allowed in one line,grace@example.net,"Grace\r\nBrewster",Hopper,yes,,fr,G2\r\n'
    "5,duplicate,duplicate of line 2,ADA@example.ORG,Ada,Again,yes,,,A3\r\n"
    "6,consent-refused,consent refused,alan@example.com,Alan,Turing,no,,,T4\r\n"
    "7,consent-missing,no consent given (the consent cell is empty),katherine@example.org,Katherine,Johnson,,,,K5\r\n"
    '8,consent-missing,"consent is not yes/no, true/false, 1/0 or y/n",mallory@example.org,'
    '"\'=HYPERLINK(""http://x"",""y"")",Formula,maybe,,,M6\r\n'
    "10,invalid-email,not a valid email address,not-an-email,Xavier,Ymir,yes,,,X8\r\n"
    '11,invalid-consent-date,"consent_date is not an ISO date or date-time (2026-11-02, 2026-11-02T10:30:00+01:00)",'
    "dee@example.org,Dee,Date,yes,2026-13-45,,D9\r\n"
    '12,invalid-locale,"locale is not a language tag like en, fr or pt-BR",lou@example.org,Lou,Cale,yes,,english!,'
    "L10\r\n"
    '13,malformed-row,"9 cells, but the header has 7 columns",max@example.org,Max,Many,yes,,,M11,extra,more\r\n'
)


# what does not depend on the database runs on SQLite alone; what writes members runs on both
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(autouse=True)
def ledger(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DISPATCH_DATABASE_URL", db_url)
    monkeypatch.setenv("DISPATCH_LOG_LEVEL", "WARNING")  # no migration chatter between the report's lines
    get_settings.cache_clear()
    yield db_url
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def stored(url: str) -> list[tuple[str, str, str | None, bool]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [
                (lst, email, name, consent)
                for lst, email, name, consent in conn.execute(
                    sql_select(SupporterList.name, Supporter.email, Supporter.name, Supporter.consent)
                    .join(Supporter, Supporter.list_id == SupporterList.id)
                    .order_by(SupporterList.name, Supporter.email)
                )
            ]
    finally:
        engine.dispose()


def test_import_reports_each_rejected_row_and_writes_them_with_formulas_inert(tmp_path: Path) -> None:
    source, rejects = write(tmp_path / "list.csv", HOSTILE), tmp_path / "rejects.csv"
    code, output = run("supporters", "import", str(source), "--list", "petition", "--rejects", str(rejects))
    assert code == 0, output
    assert output.splitlines() == [
        "list 'petition': 3 added, 0 updated, 0 unchanged, 0 consent withdrawn, 9 rows rejected",
        "rejected: 2 consent-missing, 1 consent-refused, 1 duplicate, 1 invalid-consent-date, 1 invalid-email, "
        "1 invalid-field, 1 invalid-locale, 1 malformed-row",
        "  line 3: name contains U+000D (CARRIAGE RETURN) at character 6: control characters and bidirectional "
        "controls are not allowed in one line",
        "  line 5: duplicate of line 2",
        "  line 6: consent refused",
        "  line 7: no consent given (the consent cell is empty)",
        "  line 8: consent is not yes/no, true/false, 1/0 or y/n",
        "  line 10: not a valid email address",
        "  line 11: consent_date is not an ISO date or date-time (2026-11-02, 2026-11-02T10:30:00+01:00)",
        "  line 12: locale is not a language tag like en, fr or pt-BR",
        "  line 13: 9 cells, but the header has 7 columns",
        f"every rejected row, with its cells: {rejects}",
    ]
    assert rejects.read_bytes().decode("utf-8") == REJECTS
    assert stored(get_settings().database_url) == [
        ("petition", "ada@example.org", "Ada Lovelace", True),
        ("petition", "bold@example.org", "<b>Bold</b> Name", True),
        ("petition", "true@example.org", None, True),
    ]


def test_reimport_changes_nothing_and_says_so_then_consent_no_withdraws(tmp_path: Path) -> None:
    source = write(tmp_path / "list.csv", HOSTILE)
    assert run("supporters", "import", str(source), "--list", "petition")[0] == 0
    code, output = run("supporters", "import", str(source), "--list", "petition")
    assert code == 0, output
    assert output.splitlines()[:2] == [
        "list 'petition': 0 added, 0 updated, 3 unchanged, 0 consent withdrawn, 9 rows rejected",
        "nothing changed",
    ]
    assert "--rejects FILE writes every rejected row with its cells" in output
    code, output = run("supporters", "import", str(write(tmp_path / "update.csv", UPDATE)), "--list", "petition")
    assert code == 0, output
    assert output.splitlines()[:3] == [
        "list 'petition': 1 added, 1 updated, 1 unchanged, 1 consent withdrawn, 1 row rejected",
        "rejected: 1 consent-refused",
        "  line 5: consent refused",
    ]
    code, output = run("supporters", "lists")
    assert code == 0, output
    assert re.search(r"petition\s*│\s*4\s*│\s*3\s*│", output), output


def test_a_latin1_file_is_refused_with_nothing_written_then_imported_with_its_encoding(tmp_path: Path) -> None:
    source = write(tmp_path / "latin1.csv", LATIN1)
    code, output = run("supporters", "import", str(source), "--list", "members")
    assert code == 2
    assert " ".join(output.split()) == f"error: {source}: {LATIN1_REFUSED}"
    assert stored(get_settings().database_url) == []
    assert "no supporter lists yet" in run("supporters", "lists")[1]
    code, output = run("supporters", "import", str(source), "--list", "members", "--encoding", "latin-1")
    assert code == 0, output
    assert output.splitlines() == [
        "list 'members': 2 added, 0 updated, 0 unchanged, 0 consent withdrawn, 0 rows rejected"
    ]
    assert stored(get_settings().database_url) == [
        ("members", "ann@example.org", "Ann", True),
        ("members", "jose@example.org", "José", True),
    ]


@sqlite_only
@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (b"Mail,Name\n", (), "{source}: line 1: no email column (the header has: 'Mail', 'Name'); name it email, "
         "e-mail or email address, or map it with --map 'HEADER=email'"),
        (b"Mail,consent\nx@example.org,yes\n", ("--map", "Mail"), "--map: 'Mail' is not HEADER=COLUMN"),
        (b"email\n", ("--encoding", "klingon"), "{source}: unknown encoding 'klingon'"),
    ],
)  # fmt: skip
def test_file_level_refusals_exit_2_with_the_message(
    tmp_path: Path, content: bytes, args: tuple[str, ...], message: str
) -> None:
    source = write(tmp_path / "list.csv", content)
    code, output = run("supporters", "import", str(source), "--list", "x", *args)
    assert code == 2
    assert " ".join(output.split()) == "error: " + message.format(source=source)
    assert stored(get_settings().database_url) == []


@sqlite_only
def test_a_rejects_file_that_cannot_be_written_refuses_the_import(tmp_path: Path) -> None:
    source, rejects = write(tmp_path / "list.csv", HOSTILE), tmp_path / "missing" / "rejects.csv"
    code, output = run("supporters", "import", str(source), "--list", "x", "--rejects", str(rejects))
    assert code == 2
    assert " ".join(output.split()) == f"error: {rejects}: No such file or directory; nothing was imported"
    assert stored(get_settings().database_url) == []


@sqlite_only
def test_a_list_name_must_be_one_line_of_at_most_100_characters(tmp_path: Path) -> None:
    source = write(tmp_path / "list.csv", HOSTILE)
    for name, why in (("", "must be 1 to 100 characters"), ("a\x1bb", "contains U+001B (ESCAPE) at character 2")):
        code, output = run("supporters", "import", str(source), "--list", name)
        assert code == 2
        assert output == f"error: the list name {name!r} {why}\n"  # repr() writes the ESC as \\x1b
    assert stored(get_settings().database_url) == []


@sqlite_only
def test_map_names_the_columns_of_another_language(tmp_path: Path) -> None:
    content = "E-Mail Adresse,Vorname,Nachname,Einwilligung\nx@example.de,José,Müller,ja\n".encode()
    source = write(tmp_path / "de.csv", content.replace(b",ja\n", b",yes\n"))
    spec = "E-Mail Adresse=email,Vorname=first_name,Nachname=last_name,Einwilligung=consent"
    code, output = run("supporters", "import", str(source), "--list", "de", "--map", spec)
    assert code == 0, output
    assert stored(get_settings().database_url) == [("de", "x@example.de", "José Müller", True)]


@sqlite_only
def test_ten_thousand_invalid_rows_are_reported_quickly(tmp_path: Path) -> None:
    source = write(tmp_path / "bad.csv", b"email,consent\n" + b"".join(b"bad%d,yes\n" % i for i in range(10_000)))
    rejects = tmp_path / "rejects.csv"
    start = time.perf_counter()
    code, output = run("supporters", "import", str(source), "--list", "bad", "--rejects", str(rejects))
    print(f"10,000 invalid rows reported in {time.perf_counter() - start:.2f} s")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[:2] == [
        "list 'bad': 0 added, 0 updated, 0 unchanged, 0 consent withdrawn, 10000 rows rejected",
        "rejected: 10000 invalid-email",
    ]
    assert lines[2:] == [
        *(f"  line {n}: not a valid email address" for n in range(2, 22)),
        "  ... and 9980 more",
        f"every rejected row, with its cells: {rejects}",
    ]
    assert len(rejects.read_text(encoding="utf-8-sig").splitlines()) == 10_001


@sqlite_only
def test_a_real_process_shows_the_refusal_without_a_traceback_and_a_bar_only_on_a_terminal(
    tmp_path: Path, db_url: str
) -> None:
    source = write(tmp_path / "latin1.csv", LATIN1)
    env = base_env(tmp_path, DISPATCH_DATABASE_URL=db_url, COLUMNS="200", TERM="xterm")
    done = subprocess.run(
        [sys.executable, "-m", "dispatcher", "supporters", "import", str(source), "--list", "x"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert " ".join(done.stderr.split()) == f"error: {source}: {LATIN1_REFUSED}"
    # stderr a terminal: a progress bar by bytes read; not a terminal (above): none
    good = write(
        tmp_path / "good.csv", b"email,consent\n" + b"".join(b"p%d@example.org,yes\n" % i for i in range(5000))
    )
    main, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "supporters", "import", str(good), "--list", "x"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=secondary, text=True,
    )  # fmt: skip
    os.close(secondary)
    shown = b""
    while True:
        ready, _, _ = select.select([main], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the process ended and closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    out, _ = process.communicate(timeout=60)
    os.close(main)
    assert process.returncode == 0
    assert out.splitlines() == ["list 'x': 5000 added, 0 updated, 0 unchanged, 0 consent withdrawn, 0 rows rejected"]
    assert b"importing" in shown and b"kB" in shown
    assert "importing" not in done.stderr
