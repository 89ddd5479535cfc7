"""The one way this project writes a CSV file: formula cells made inert, written whole or not at all.

A spreadsheet that opens a CSV runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` (and, in some, a
tab, a carriage return, a line feed or a NUL before one) as a formula: ``=HYPERLINK("http://x","y")`` in a
supporter's name would become a link in the operator's spreadsheet. Such a cell is written with a leading
``'``, which spreadsheets read as "this is text" (OWASP, "CSV Injection"); the full-width forms of those
signs (U+FF1D, U+FF0B, U+FF0D, U+FF20), which some spreadsheets also take for them, are treated alike.
Numbers are written as numbers.

The file is UTF-8 with a byte-order mark (so that spreadsheets do not take it for a legacy encoding), CRLF
line ends (RFC 4180), readable by its owner only (it may hold personal data), and written to a temporary
file renamed into place on success: a failed run leaves no half-written file.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

FORMULA_STARTS = tuple("=+-@\t\r\n\x00\uff1d\uff0b\uff0d\uff20")


def inert(cell: str) -> str:
    """``cell`` as a spreadsheet shows it as text: with a leading ``'`` if it could start a formula."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


class CsvOut:
    """Rows to a CSV file, each string cell made inert."""

    def __init__(self, stream: object) -> None:
        self._writer = csv.writer(stream)  # type: ignore[arg-type]

    def writerow(self, cells: Iterable[object]) -> None:
        self._writer.writerow([inert(c) if isinstance(c, str) else c for c in cells])


@contextlib.contextmanager
def write_csv(path: Path) -> Iterator[CsvOut]:
    """A CSV file at ``path``, there once the block ends without an error (replacing any file there)."""
    path = Path(path)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    except OSError as err:  # named by the file asked for, not the temporary one
        raise OSError(err.errno, err.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as stream:
            yield CsvOut(stream)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
