"""Reading a CSV file as a stream of records, each with the physical line it starts on.

The bytes are decoded as they are read (never the whole file in memory); a byte the encoding cannot
decode stops the reading with :class:`UndecodableByte`, which names the line and the byte offset. Line ends
are CRLF, LF or a lone CR (as ``open(newline="")`` reads them); a line break inside a quoted cell belongs to
its record, whose line number stays the one it started on. The parsing itself is the ``csv`` module's.

Limits keep a hostile file from taking the memory: a cell longer than the ``csv`` module's field limit
(131,072 characters) or a record longer than :data:`MAX_RECORD_CHARS` is a malformed record, reported on its
line; reading goes on after it.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

MAX_RECORD_CHARS = 1024 * 1024
CHUNK_BYTES = 64 * 1024
_LINE_END = re.compile(r"\r\n|\r|\n")
_UTF8_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class UndecodableByte(ValueError):
    """A byte (or sequence) the encoding cannot decode, at ``offset`` bytes from the file's start."""

    def __init__(self, *, line: int, offset: int, byte: int, encoding: str) -> None:
        self.line, self.offset, self.byte, self.encoding = line, offset, byte, encoding
        super().__init__(f"line {line}: byte 0x{byte:02x} at offset {offset} is not {encoding}")


class Utf16Bom(ValueError):
    """The file starts with a UTF-16 byte-order mark, and no encoding was named."""


@dataclass(frozen=True)
class Record:
    """One CSV record: its cells, or why it could not be read (``error``), and the line it starts on."""

    line: int
    cells: list[str]
    error: str | None = None


def records(stream: BinaryIO, *, encoding: str | None = None) -> Iterator[Record]:
    """The records of ``stream`` in order; blank lines are skipped. ``encoding`` None is UTF-8, with or
    without a byte-order mark. LookupError for an encoding Python does not know."""
    lines = PhysicalLines(stream, encoding)
    reader = csv.reader(lines)
    while True:
        start = lines.line + 1
        lines.start_record()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except RecordTooLong:
            reader = csv.reader(lines)  # what the old reader held of the record is dropped
            yield Record(start, [], f"not valid CSV: the row is longer than {MAX_RECORD_CHARS} characters")
            continue
        except csv.Error as err:  # e.g. a field over the limit; the reader starts afresh on the next line
            yield Record(start, [], f"not valid CSV: {err}")
            continue
        if cells and any(cell.strip() for cell in cells):
            yield Record(start, cells)


class RecordTooLong(Exception):
    pass


def text_encoding(encoding: str | None) -> str:
    """Python's name for ``encoding`` (None: UTF-8); LookupError if it is unknown or not a text encoding
    ("base64", "rot13")."""
    info = codecs.lookup(encoding or "utf-8")
    if not getattr(info, "_is_text_encoding", True):
        raise LookupError(f"{encoding!r} is not a text encoding")
    return info.name


class PhysicalLines:
    """The decoded lines of a byte stream, each with its line end, for ``csv.reader``; counts them.

    An iterator object rather than a generator, so that it can raise :class:`RecordTooLong` and go on.
    A record that grows over the limit is dropped up to its end, found by counting quotes: where the
    quotes seen since the record started are even, the line end is not in a quoted cell."""

    def __init__(self, stream: BinaryIO, encoding: str | None) -> None:
        name = text_encoding(encoding)
        self._stream = stream
        self._encoding = name
        self._shown = "UTF-8" if name == "utf-8" else name
        self._decoder = codecs.getincrementaldecoder(name)(errors="strict")
        self._strip_bom = name == "utf-8"
        self._ask_for_encoding = encoding is None
        self._text = ""  # decoded, not yet handed out
        self._pos = 0
        self._read = 0  # bytes given to the decoder
        self._eof = False
        self._record = 0  # characters handed out for the current record
        self._odd = False  # an odd number of quotes handed out for the current record
        self.line = 0  # physical lines handed out (or dropped) so far

    def __iter__(self) -> PhysicalLines:
        return self

    def start_record(self) -> None:
        self._record, self._odd = 0, False

    def __next__(self) -> str:
        found = self._physical()
        if found is None:
            raise StopIteration
        line, quotes, too_long = found
        self.line += 1
        self._odd ^= bool(quotes & 1)
        self._record += len(line)
        if too_long or self._record > MAX_RECORD_CHARS:
            while self._odd and (rest := self._physical()) is not None:  # drop the rest of the record
                self.line += 1
                self._odd ^= bool(rest[1] & 1)
            raise RecordTooLong
        return line

    def _physical(self) -> tuple[str, int, bool] | None:
        """The next line with its line end and its number of quotes; a line too long to hold is dropped as
        it is read (its quotes counted, the third item True). None at the end."""
        dropped: int | None = None  # quotes in the part of a too-long line dropped so far
        while True:
            found = _LINE_END.search(self._text, self._pos)
            held_cr = found is not None and found.group() == "\r" and found.end() == len(self._text)
            if found is not None and not (held_cr and not self._eof):  # a CR at the end may precede an LF
                end = found.end()
            elif self._eof:
                if self._pos >= len(self._text):
                    return None if dropped is None else ("", dropped, True)
                end = len(self._text)
            else:
                if found is None and len(self._text) - self._pos > MAX_RECORD_CHARS:
                    dropped = (dropped or 0) + self._text.count('"', self._pos)
                    self._text, self._pos = "", 0
                self._fill()
                continue
            line, self._pos = self._text[self._pos : end], end
            if dropped is not None:
                return "", dropped + line.count('"'), True
            return line, line.count('"'), False

    def _fill(self) -> None:
        chunk = self._stream.read(CHUNK_BYTES)
        if self._read == 0 and chunk:
            if self._ask_for_encoding and chunk.startswith(_UTF16_BOMS):
                raise Utf16Bom
            if self._strip_bom and chunk.startswith(_UTF8_BOM):
                chunk = chunk[len(_UTF8_BOM) :]
                self._read = len(_UTF8_BOM)
        pending = self._decoder.getstate()[0]
        try:
            text = self._decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as err:
            raise self._undecodable(err, pending) from None
        self._read += len(chunk)
        self._eof = not chunk
        self._text = self._text[self._pos :] + text
        self._pos = 0

    def _undecodable(self, err: UnicodeDecodeError, pending: bytes) -> UndecodableByte:
        offset = self._read - len(pending) + err.start
        before = self._text[self._pos :] + bytes(err.object[: err.start]).decode(self._encoding, errors="replace")
        line = self.line + len(_LINE_END.findall(before)) + 1
        return UndecodableByte(line=line, offset=offset, byte=err.object[err.start], encoding=self._shown)
