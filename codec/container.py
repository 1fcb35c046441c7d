"""The .nerva container: magic, format version, model id, length-prefixed typed sections, CRC32.

Byte layout (codec/FORMAT.md is the normative spec):
  "NRVA" | u8 format version (1, 2 or 3) | u16 model id | sections... | u32 CRC32 of every preceding byte
  section = u8 kind | uvarint body length | body
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import zlib
from pathlib import Path

from codec.bytesio import ByteReader, ByteWriter, FormatError

MAGIC = b"NRVA"
FORMAT_VERSION = 1     # what a file is written as unless its contents need a later version
VERSIONS = (1, 2, 3)   # what this nerva reads and writes; 2 = 1 plus single-step tensors (FORMAT.md §2), 3 = 2 plus
                       # REC sections (FORMAT.md §17)
REC_VERSION = 3        # the first version whose files may hold a REC section

# Section kinds. Ids are part of the format: never renumber, only append.
HEADER = 1    # the model config (codec.header)
TENSORS = 2   # one collection of quantized, entropy-coded tensors (codec.tensors)
RESIDUAL = 3  # one collection coded as its difference to an earlier collection (codec.tensors)
REC = 4       # relative-entropy-coded samples of the model's REC collections, and the prior they need (codec.samples)
KIND_NAMES = {HEADER: "header", TENSORS: "tensors", RESIDUAL: "residual", REC: "rec"}


@dataclasses.dataclass(frozen=True)
class Section:
    kind: int
    body: bytes
    offset: int = 0   # where the section starts in the file (for `nerva info`)

    @property
    def size(self) -> int:
        """Bytes the section takes in the file, its kind and length prefix included."""
        w = ByteWriter()
        w.uvarint(len(self.body))
        return 1 + len(w) + len(self.body)


def pack(model_id: int, sections: list[Section], version: int = FORMAT_VERSION) -> bytes:
    """A .nerva file of format `version` (the lowest its sections need: codec.tensors.version_needed)."""
    if version not in VERSIONS:
        raise ValueError(f"cannot write .nerva format version {version} (versions: {VERSIONS})")
    w = ByteWriter()
    w.raw(MAGIC)
    w.u8(version)
    w.u16(model_id)
    for s in sections:
        w.u8(s.kind)
        w.blob(s.body)
    data = w.getvalue()
    return data + zlib.crc32(data).to_bytes(4, "little")


def unpack(data: bytes) -> tuple[int, list[Section]]:
    """(model id, sections) of a .nerva file; FormatError names what is wrong with a damaged one."""
    if not data:
        raise FormatError("file is empty (0 bytes)")
    if len(data) < 4 or data[:4] != MAGIC:
        raise FormatError("not a .nerva file (bad magic bytes)")
    if len(data) < 5 + 2 + 4:
        raise FormatError("file is truncated (shorter than the fixed preamble)")
    if data[4] not in VERSIONS:
        raise FormatError(f"unsupported .nerva format version {data[4]} "
                          f"(this nerva reads versions {', '.join(map(str, VERSIONS[:-1]))} and {VERSIONS[-1]})")
    body, crc = data[:-4], int.from_bytes(data[-4:], "little")
    sections = _parse_sections(body)   # parse first: a truncated file is reported as truncated
    if zlib.crc32(body) != crc:
        raise FormatError("file is corrupted (CRC32 checksum mismatch)")
    return int.from_bytes(data[5:7], "little"), sections


def format_version(data: bytes) -> int:
    """The format version of a file that `unpack` accepted: the byte after the magic."""
    return data[4]


def _parse_sections(body: bytes) -> list[Section]:
    r = ByteReader(body, "file")
    r.raw(7)
    sections = []
    try:
        while r.remaining():
            start = r.pos
            kind = r.u8()
            sections.append(Section(kind, r.blob(), start))
    except FormatError:
        raise FormatError("file is truncated or corrupted (a section runs past the end)") from None
    return sections


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes via a temporary sibling and a rename, so readers never see a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; a written file gets the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
