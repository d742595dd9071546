"""A canonical ZIP: one byte layout per set of members, written and read without ``zipfile``.

Packages must be verifiable byte for byte, not only member by member: a ZIP can carry
comments, extra fields, timestamps, gaps between entries or a second central directory that
a member-level hash never sees. So fedge writes exactly one layout — members stored (no
compression, so no dependence on a zlib version) in the order given, each a local header with
fixed fields and a zero timestamp of 1980-01-01, then the central directory, then the end
record with no comment — and the reader parses strictly and then *re-writes the archive from
the members it found and requires the same bytes*. Anything else (another tool's ZIP, one
flipped byte anywhere, appended data) is an :class:`~fedge.errors.IntegrityError`.

The reader refuses, before returning any member: names that are absolute, contain ``..``,
backslashes, drive letters or control characters, duplicates, symbolic links or directories,
more members or bytes than the limits allow (declared or actual: no zip bombs), and CRC
mismatches. Standard tools (``unzip``, Python's ``zipfile``) read these archives normally.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from fedge.errors import IntegrityError, ModelFormatError

__all__ = ["MAX_MEMBERS", "MAX_TOTAL_BYTES", "read_canonical_zip", "write_canonical_zip"]

MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 1 << 30  # 1 GiB of member data
MAX_NAME = 255

_LOCAL = struct.Struct("<IHHHHHIIIHH")  # signature ... name length, extra length
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_LOCAL_SIG, _CENTRAL_SIG, _END_SIG = 0x04034B50, 0x02014B50, 0x06054B50
_VERSION = 20  # 2.0: stored members, no ZIP64
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
_DOS_TIME = 0
_UNIX_FILE = (0o100644 << 16)  # regular file, rw-r--r--
_MADE_BY = (3 << 8) | _VERSION  # Unix


def _check_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    if (
        not name
        or len(raw) > MAX_NAME
        or name.startswith("/")
        or "\\" in name
        or ":" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
        or any(ord(c) < 32 for c in name)
    ):
        raise IntegrityError(f"unsafe member name in package: {name!r}")
    return raw


def write_canonical_zip(members: Sequence[tuple[str, bytes]]) -> bytes:
    """The one canonical archive of ``members`` (name, data), in the given order."""
    if len(members) > MAX_MEMBERS:
        raise ModelFormatError(f"{len(members)} members exceed the limit of {MAX_MEMBERS}")
    names = [n for n, _ in members]
    if len(set(names)) != len(names):
        raise ModelFormatError("duplicate member names")
    local_parts: list[bytes] = []
    central_parts: list[bytes] = []
    offset = 0
    for name, data in members:
        raw = _check_name(name)
        crc = zlib.crc32(data) & 0xFFFFFFFF
        size = len(data)
        if size >= 0xFFFFFFFF or offset >= 0xFFFFFFFF:
            raise ModelFormatError("package too large for a ZIP without ZIP64")
        header = _LOCAL.pack(
            _LOCAL_SIG, _VERSION, 0x0800, 0, _DOS_TIME, _DOS_DATE, crc, size, size, len(raw), 0
        )
        local_parts += [header, raw, data]
        central_parts += [
            _CENTRAL.pack(
                _CENTRAL_SIG, _MADE_BY, _VERSION, 0x0800, 0, _DOS_TIME, _DOS_DATE, crc, size,
                size, len(raw), 0, 0, 0, 0, _UNIX_FILE, offset,
            ),
            raw,
        ]
        offset += len(header) + len(raw) + size
    central = b"".join(central_parts)
    end = _END.pack(_END_SIG, 0, 0, len(members), len(members), len(central), offset, 0)
    return b"".join(local_parts) + central + end


def read_canonical_zip(
    data: bytes, *, max_members: int = MAX_MEMBERS, max_total: int = MAX_TOTAL_BYTES
) -> list[tuple[str, bytes]]:
    """The members of a canonical archive, in order; IntegrityError unless every byte is
    exactly what :func:`write_canonical_zip` would write for them."""
    if len(data) < _END.size:
        raise IntegrityError("not a fedge package: too short for a ZIP archive")
    if len(data) > max_total + 64 * max_members + (1 << 20):
        raise IntegrityError(f"package of {len(data):,} bytes exceeds the size limit")
    sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment = _END.unpack_from(
        data, len(data) - _END.size
    )
    if sig != _END_SIG or comment or disk or cd_disk or n_disk != n_total:
        raise IntegrityError("not a canonical fedge package (end of central directory)")
    if n_total > max_members:
        raise IntegrityError(f"package declares {n_total} members, the limit is {max_members}")
    if cd_offset + cd_size + _END.size != len(data):
        raise IntegrityError("not a canonical fedge package (central directory position)")
    members: list[tuple[str, bytes]] = []
    position, total = cd_offset, 0
    for _ in range(n_total):
        if position + _CENTRAL.size > cd_offset + cd_size:
            raise IntegrityError("central directory truncated")
        fields = _CENTRAL.unpack_from(data, position)
        name_len, extra_len, comment_len = fields[10], fields[11], fields[12]
        attributes, local_offset = fields[15], fields[16]
        if fields[0] != _CENTRAL_SIG or extra_len or comment_len:
            raise IntegrityError("not a canonical fedge package (central directory entry)")
        if attributes != _UNIX_FILE:
            raise IntegrityError("package member is not a regular file (link or directory?)")
        size = fields[9]
        total += size
        if fields[8] != size or total > max_total:
            raise IntegrityError(f"package members exceed {max_total:,} bytes (zip bomb?)")
        raw_name = data[position + _CENTRAL.size : position + _CENTRAL.size + name_len]
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise IntegrityError("package member name is not UTF-8") from None
        _check_name(name)
        start = local_offset + _LOCAL.size + name_len
        if start + size > cd_offset:
            raise IntegrityError(f"member {name!r} runs past the central directory")
        member = data[start : start + size]
        if zlib.crc32(member) & 0xFFFFFFFF != fields[7]:
            raise IntegrityError(f"member {name!r} fails its CRC check")
        members.append((name, member))
        position += _CENTRAL.size + name_len
    if len({n for n, _ in members}) != len(members):
        raise IntegrityError("package has duplicate member names")
    if write_canonical_zip(members) != data:
        raise IntegrityError("package bytes are not canonical: altered, or not made by fedge")
    return members
