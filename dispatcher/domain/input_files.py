"""The files a campaign reads: kept inside the campaign's folder, regular, bounded in size, UTF-8.

A campaign file names its letter template and supporters CSV by paths relative to its own folder.
Those paths are resolved (symlinks included) and must stay inside that folder, so a campaign cannot
make the dispatcher read ``/etc/shadow`` or send ``../../etc/passwd`` as a letter. Every file is
opened without blocking, must be a regular file (not a device, FIFO or folder) and is read only up to
its bound, so ``/dev/zero`` is refused instead of filling the memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dispatcher.domain.errors import CampaignFileError, Problem

KIB = 1024
MIB = 1024 * KIB
CAMPAIGN_FILE_MAX_BYTES = 1 * MIB
TEMPLATE_MAX_BYTES = 256 * KIB
SUPPORTERS_CSV_MAX_BYTES = 16 * MIB

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


class FileRefused(Exception):
    """Why a file cannot be read as campaign input, in words for the campaign's author."""


def read_campaign_text(path: Path) -> str:
    """The campaign file's text; a CampaignFileError naming the file if it cannot be read as such."""
    try:
        return read_text(path, limit=CAMPAIGN_FILE_MAX_BYTES, what="a campaign file")
    except FileRefused as err:
        raise CampaignFileError([Problem(file=str(path), where="", message=str(err))]) from None


def read_named_file(base: Path, name: str, *, limit: int, what: str, campaign_file: str, where: str, field: str) -> str:
    """The text of the file that ``where.field`` of the campaign names, relative to ``base``.

    Refusals (outside the folder, not a regular file, too large, not UTF-8) are a CampaignFileError
    whose Problem names the campaign file, the field and the path.
    """

    def refused(message: str) -> CampaignFileError:
        return CampaignFileError([Problem(file=campaign_file, where=where, field=field, message=message)])

    try:
        path = inside_folder(base, name)
    except FileRefused as err:
        raise refused(str(err)) from None
    try:
        return read_text(path, limit=limit, what=what)
    except FileRefused as err:
        raise refused(f"{path}: {err}") from None


def inside_folder(base: Path, name: str) -> Path:
    """``name`` resolved against ``base`` (symlinks followed); refused unless it stays inside ``base``."""
    folder = base.resolve()
    try:
        path = (folder / name).resolve()
    except (OSError, RuntimeError, ValueError) as err:  # a symlink loop, a NUL in the name
        raise FileRefused(f"{name!r} cannot be resolved: {err}") from None
    if not path.is_relative_to(folder):
        raise FileRefused(
            f"{name!r} is outside the campaign's folder {folder} (it resolves to {path}); "
            "keep the file beside the campaign file"
        )
    return path


def read_text(path: Path, *, limit: int, what: str) -> str:
    """A regular file of at most ``limit`` bytes, decoded as UTF-8 (a leading UTF-8 BOM is dropped)."""
    data = _read_bytes(path, limit=limit, what=what)
    if data.startswith(_UTF16_BOMS):
        raise FileRefused("not UTF-8: it starts with a UTF-16 byte-order mark; save it as UTF-8")
    nul = data.find(b"\0")
    if nul >= 0:
        raise FileRefused(f"not UTF-8 text: a NUL byte at offset {nul} (is it UTF-16 or a binary file?)")
    try:
        return data.removeprefix(_UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as err:
        offset = err.start + (len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0)
        raise FileRefused(
            f"not UTF-8: byte 0x{data[offset]:02x} at offset {offset} is not valid UTF-8; save the file as UTF-8"
        ) from None


def _read_bytes(path: Path, *, limit: int, what: str) -> bytes:
    """At most ``limit`` bytes of a regular file, opened without blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileRefused("file not found") from None
    except OSError as err:
        raise FileRefused(f"cannot open: {err.strerror or err}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise FileRefused(f"not a regular file ({kind})")
    with os.fdopen(fd, "rb") as file:
        try:
            data = file.read(limit + 1)
        except OSError as err:
            raise FileRefused(f"cannot read: {err.strerror or err}") from None
    if len(data) > limit:
        raise FileRefused(f"larger than {_size(limit)}: {what} is at most {_size(limit)}")
    return data


def _size(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit % MIB == 0 else f"{limit // KIB} KiB"
