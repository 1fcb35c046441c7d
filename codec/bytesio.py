"""Little-endian byte writer/reader with varints, shared by the header, entropy tables and container."""

from __future__ import annotations

import struct

from inr.errors import NervaError


class FormatError(NervaError):
    """A .nerva file (or a part of it) is truncated, corrupted, or of an unknown version."""


MAX_UVARINT = (1 << 64) - 1   # FORMAT.md §1: a uvarint holds at most 64 bits, an svarint an int64


class ByteWriter:
    """Append-only buffer. All fixed-width numbers are little-endian."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, data: bytes) -> None:
        self._parts.append(bytes(data))

    def u8(self, v: int) -> None:
        self._parts.append(struct.pack("<B", v))

    def u16(self, v: int) -> None:
        self._parts.append(struct.pack("<H", v))

    def u32(self, v: int) -> None:
        self._parts.append(struct.pack("<I", v))

    def f32(self, v: float) -> None:
        self._parts.append(struct.pack("<f", v))

    def f64(self, v: float) -> None:
        self._parts.append(struct.pack("<d", v))

    def uvarint(self, v: int) -> None:
        """LEB128: 7 bits per byte, high bit set on every byte but the last."""
        if v < 0:
            raise ValueError(f"uvarint needs v >= 0, got {v}")
        out = bytearray()
        while True:
            b = v & 0x7F
            v >>= 7
            if v:
                out.append(b | 0x80)
            else:
                out.append(b)
                break
        self._parts.append(bytes(out))

    def svarint(self, v: int) -> None:
        """Zig-zag mapped signed varint: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ..."""
        self.uvarint(2 * v if v >= 0 else -2 * v - 1)

    def blob(self, data: bytes) -> None:
        """Length-prefixed (uvarint) bytes."""
        self.uvarint(len(data))
        self.raw(data)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)


class ByteReader:
    """Cursor over bytes; every read past the end raises FormatError naming `what` was being read."""

    def __init__(self, data: bytes, what: str = "data") -> None:
        self.data = memoryview(bytes(data))
        self.pos = 0
        self.what = what

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FormatError(f"{self.what} is truncated (needed {n} bytes at offset {self.pos}, "
                              f"{self.remaining()} left)")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def _unpack(self, fmt: str, n: int):
        return struct.unpack(fmt, self.raw(n))[0]

    def u8(self) -> int:
        return self._unpack("<B", 1)

    def u16(self) -> int:
        return self._unpack("<H", 2)

    def u32(self) -> int:
        return self._unpack("<I", 4)

    def f32(self) -> float:
        return self._unpack("<f", 4)

    def f64(self) -> float:
        return self._unpack("<d", 8)

    def uvarint(self) -> int:
        """A value below 2^64 (no field of the format holds more); anything longer is malformed."""
        start, shift, v = self.pos, 0, 0
        while True:
            b = self.u8()
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 63:
                break
        if b & 0x80 or v > MAX_UVARINT:
            raise FormatError(f"{self.what} holds a malformed varint at offset {start} (more than 64 bits)")
        return v

    def svarint(self) -> int:
        z = self.uvarint()
        return z >> 1 if not z & 1 else -((z + 1) >> 1)

    def blob(self) -> bytes:
        return self.raw(self.uvarint())

    def expect_end(self) -> None:
        if self.remaining():
            raise FormatError(f"{self.what} has {self.remaining()} unexpected trailing bytes")
