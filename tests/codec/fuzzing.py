"""Structure-aware mutations of valid .nerva files (CRC recomputed) and the per-case outcome check.

Shared by tests/codec/test_fuzz.py (hypothesis, in the suite) and bench/fuzz.py (the long run), which
puts this folder on sys.path. A seed file is walked once into its fields (offset, size, kind) following
codec/FORMAT.md §2, §4, §6, §7; every mutation then rewrites bytes, re-packs the sections where a
length changed, and recomputes the CRC, so the reader's header, tensor and entropy parsers are reached
instead of the checksum test.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import struct
import time
import tracemalloc
import typing
import zlib
from pathlib import Path

from codec.bytesio import ByteReader, ByteWriter, FormatError
from inr.config import field_types

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "format_v1"
GOLDEN_V2 = GOLDEN.parent / "format_v2"   # version 2: tensors with one step for all their elements
HEADER, TENSORS, RESIDUAL = 1, 2, 3   # section kinds, FORMAT.md §2

# Per-case bounds the harness asserts. Time is the process's CPU time, so a loaded machine (2 cores
# shared by many processes) does not fail a case that a quiet one passes. A tiny file parses in ~5 ms
# and ~1 MiB; a mutated header that is still valid retraces the model (jax.eval_shape, 0.1-0.4 s of CPU
# for a tiny config). 3 s is ~7x the slowest valid trace and ~17x below the 51 s hang of issue 13. 64 MiB is ~50x the largest tiny file's decoded tensors, yet far below what any
# file claiming absurd sizes would make an unchecked reader allocate (the issue saw 2-20 GB).
MAX_SECONDS = 3.0
MAX_PEAK_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class Field:
    """One encoded value inside a section body."""

    section: int   # index into the file's sections
    offset: int    # within the section body
    size: int      # encoded bytes
    kind: str      # encoding: int (svarint), uvarint, u8, u16, u32, f16, f64, str, tuple, bool, stream
    name: str      # what it is, e.g. "header/geometry/frames", "params/3/n_steps"


@dataclasses.dataclass(frozen=True)
class Seed:
    """A valid file split into its preamble, sections and fields."""

    label: str
    data: bytes
    model_id: int
    sections: tuple[tuple[int, bytes], ...]
    fields: tuple[Field, ...]
    version: int = 1   # the preamble's format version, kept by every mutation but change_preamble's


# ---------------------------------------------------------------------------------------------
# Walking a valid file into fields (independent of the reader under test; FORMAT.md is the guide).


def split_sections(data: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    """(model id, [(kind, body)]) of a valid file."""
    r = ByteReader(data[7:-4])
    sections = []
    while r.remaining():
        kind = r.u8()
        sections.append((kind, r.blob()))
    return int.from_bytes(data[5:7], "little"), sections


def pack(sections, model_id: int, magic: bytes = b"NRVA", version: int = 1) -> bytes:
    """A file from sections with every length prefix and the CRC computed (FORMAT.md §2)."""
    w = ByteWriter()
    w.raw(magic)
    w.u8(version)
    w.u16(model_id)
    for kind, body in sections:
        w.u8(kind)
        w.blob(body)
    return with_crc(w.getvalue())


def with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "little")


class _Walker:
    """Reads a section body and records where each value lies."""

    def __init__(self, section: int, body: bytes, prefix: str) -> None:
        self.r = ByteReader(body)
        self.section, self.prefix = section, prefix
        self.fields: list[Field] = []

    def read(self, kind: str, name: str):
        start = self.r.pos
        value = {"int": self.r.svarint, "uvarint": self.r.uvarint, "u8": self.r.u8, "bool": self.r.u8,
                 "u16": self.r.u16, "u32": self.r.u32, "f64": self.r.f64, "str": self.r.blob,
                 "f16": lambda: self.r.raw(2)}[kind]()
        self.fields.append(Field(self.section, start, self.r.pos - start, kind, f"{self.prefix}/{name}"))
        return value


def walk_header(section: int, body: bytes, cls) -> list[Field]:
    w = _Walker(section, body, "header")
    _walk_class(w, cls, "")
    return w.fields


def _walk_class(w: _Walker, cls, path: str) -> None:
    for f, (name, tp) in zip(dataclasses.fields(cls), field_types(cls)):
        if w.r.remaining() == 0 and (f.default is not dataclasses.MISSING
                                     or f.default_factory is not dataclasses.MISSING):
            return   # an old file: the appended fields are absent
        if dataclasses.is_dataclass(tp):
            _walk_class(w, tp, f"{path}{name}/")
        elif typing.get_origin(tp) is tuple:
            start = w.r.pos
            n = w.read("uvarint", f"{path}{name}/count")
            for i in range(n):
                w.read("int", f"{path}{name}/{i}")
            w.fields.append(Field(w.section, start, w.r.pos - start, "tuple", f"header/{path}{name}"))
        else:
            w.read({int: "int", float: "f64", str: "str", bool: "bool"}[tp], path + name)


def walk_collection(section: int, kind: int, body: bytes) -> list[Field]:
    """Fields of a TENSORS (§6) or RESIDUAL (§6.2) body, the stream last."""
    w = _Walker(section, body, "?")
    name = w.read("str", "name").decode()
    w.prefix = name
    w.fields[0] = dataclasses.replace(w.fields[0], name=f"{name}/name")
    if kind == RESIDUAL:
        w.read("str", "reference")
    w.read("u32", "layout_crc")
    for t in range(w.read("uvarint", "count")):
        w.read("u8", f"{t}/bits")
        if kind == TENSORS:
            for s in range(w.read("uvarint", f"{t}/n_steps")):
                w.read("f16", f"{t}/step{s}")
        _walk_entropy_model(w, t)
    w.fields.append(Field(section, w.r.pos, w.r.remaining(), "stream", f"{name}/stream"))
    return w.fields


def _walk_entropy_model(w: _Walker, t: int) -> None:
    kind = w.read("u8", f"{t}/model_kind")
    lo, hi = w.read("int", f"{t}/lo"), w.read("int", f"{t}/hi")
    if kind == 1:
        w.read("u16", f"{t}/n_theta")
        w.read("u16", f"{t}/n_p0")
    elif kind == 2:
        w.read("u8", f"{t}/p")
        got = 0
        while got < hi - lo + 1:   # FORMAT.md §7.3: a value, or 0 then a zero run length - 1
            if w.read("uvarint", f"{t}/freq"):
                got += 1
            else:
                got += w.read("uvarint", f"{t}/zero_run") + 1


def make_seed(label: str, data: bytes) -> Seed:
    import inr   # the config classes say how the header is laid out
    model_id, sections = split_sections(data)
    cls = inr.registry.get_by_id(model_id).config_cls
    fields = walk_header(0, sections[0][1], cls)
    for i, (kind, body) in enumerate(sections[1:], 1):
        fields += walk_collection(i, kind, body)
    assert pack(sections, model_id, version=data[4]) == data, f"{label}: the walker does not reproduce it"
    return Seed(label, data, model_id, tuple(sections), tuple(fields), data[4])


def golden_seeds() -> list[Seed]:
    """The golden files of every format version (a version-2 seed: `golden_v2/<model>`)."""
    return ([make_seed(f"golden/{p.stem}", p.read_bytes()) for p in sorted(GOLDEN.glob("*.nerva"))]
            + [make_seed(f"golden_v2/{p.stem}", p.read_bytes()) for p in sorted(GOLDEN_V2.glob("*.nerva"))])


def fresh_seeds(names=None, bits: int = 4) -> list[Seed]:
    """Seeds from every registered model's tiny() config, freshly initialised and compressed."""
    import jax

    import inr
    from codec import api
    seeds = []
    for name in names or inr.names():
        spec = inr.get(name)
        config = spec.config_cls.tiny()
        variables = jax.jit(spec.init, static_argnums=0)(config, jax.random.key(0))
        data = api.compress(config, api.quantize_variables(variables, api.QuantPolicy(bits=bits)))
        seeds.append(make_seed(f"fresh/{name}", data))
    return seeds


# ---------------------------------------------------------------------------------------------
# Absurd values, per encoding.

INTS = [0, -1, 1, 2, 3, 7, -(1 << 31), (1 << 31) - 1, 1 << 31, 1 << 32, 1 << 40, 10 ** 6, 10 ** 8,
        (1 << 53) + 1, (1 << 63) - 1, -(1 << 63), 1 << 63, 1 << 64, (1 << 69) - 1]
UVARINTS = [0, 1, 2, 255, 1 << 16, 1 << 20, 10 ** 6, 1 << 31, 1 << 32, (1 << 63) - 1, 1 << 63,
            (1 << 64) - 1, (1 << 70) - 1]
U8S = [0, 1, 2, 3, 15, 16, 17, 24, 25, 127, 128, 255]
U16S = [0, 1, 2, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]
F16S = [math.nan, math.inf, -math.inf, -0.0, 0.0, -1.0, 65504.0, 6e-8, 1e-3]
F64S = [math.nan, -math.nan, math.inf, -math.inf, -0.0, 0.0, -1.0, 5e-324, 1e-300, 1e6, 1e300,
        float(1 << 63)]
STRS = [b"", b"x", b"\xff\xfe", b"\xc0\x80", b"gelu\x00", b"GELU", b"relu", b"sin", b"swish",
        b"gelu_tanh", b"params", b"latents", b"group000", b"group001", b"group999", b"group0000",
        b"x" * 1000]
TUPLE_COUNTS = [0, 1, 2, 3, 8, 10 ** 6, 1 << 40, (1 << 64) - 1]
# A varint whose continuation bit never ends within 10 bytes (malformed, FORMAT.md §1).
MALFORMED_VARINT = b"\xff" * 10 + b"\x01"


def _uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v >> 7 else 0))
        v >>= 7
        if not v:
            return bytes(out)


def _svarint(v: int) -> bytes:
    return _uvarint(2 * v if v >= 0 else -2 * v - 1)


def absurd_encodings(field: Field, original: bytes, rng: random.Random) -> list[bytes]:
    """Replacement bytes for `field`: the absurd values of its encoding, plus near-original ones."""
    k = field.kind
    if k == "int":
        v = ByteReader(original).svarint()
        return [_svarint(x) for x in INTS + [v + 1, v - 1, 2 * v, -v, 1000 * v]] + [MALFORMED_VARINT]
    if k == "uvarint":
        v = ByteReader(original).uvarint()
        return [_uvarint(x) for x in UVARINTS + [v + 1, max(v - 1, 0), 2 * v, 1000 * v]] + [MALFORMED_VARINT]
    if k in ("u8", "bool"):
        return [bytes([x]) for x in U8S]
    if k == "u16":
        return [struct.pack("<H", x) for x in U16S]
    if k == "u32":
        return [struct.pack("<I", x) for x in (0, 0xFFFFFFFF, rng.getrandbits(32))]
    if k == "f16":
        return [struct.pack("<e", x) for x in F16S] + [b"\x00\x7e", b"\x01\xfc"]   # quiet/signalling NaNs
    if k == "f64":
        return [struct.pack("<d", x) for x in F64S]
    if k == "str":
        return [_uvarint(len(s)) + s for s in STRS] + [_uvarint(10 ** 6) + b"x", _uvarint(1 << 63)]
    if k == "tuple":
        items = original[len(_uvarint(ByteReader(original).uvarint())):]
        return ([_uvarint(n) for n in TUPLE_COUNTS]                                   # count, no items
                + [_uvarint(n) + _svarint(1) * n for n in (0, 1, 4, 17, 10 ** 4)]      # n items of 1
                + [_uvarint(n) + _svarint(0) * n for n in (1, 2, 3)]                   # zeros
                + [_uvarint(len(items) + 1) + items + items[:1] + b"\x04"])           # one item more
    if k == "stream":
        return [b"", original[:len(original) // 2], original + b"\x00" * 4, original[:-4] if original else b"",
                b"\xff" * 4 + original, original + b"\x00"]
    raise ValueError(k)


# ---------------------------------------------------------------------------------------------
# Mutation operators. Each returns (name, bytes); every one but the raw-length ones repacks.


def _replace_field(seed: Seed, field: Field, new: bytes) -> bytes:
    sections = list(seed.sections)
    kind, body = sections[field.section]
    sections[field.section] = (kind, body[:field.offset] + new + body[field.offset + field.size:])
    return pack(sections, seed.model_id, version=seed.version)


def mutate_field(seed: Seed, rng: random.Random, only_header: bool = False) -> tuple[str, bytes]:
    pool = [f for f in seed.fields if f.section == 0] if only_header else list(seed.fields)
    field = rng.choice(pool)
    body = seed.sections[field.section][1]
    original = body[field.offset:field.offset + field.size]
    new = rng.choice(absurd_encodings(field, original, rng))
    shown = new.hex() if len(new) <= 16 else f"{new[:16].hex()}...({len(new)} bytes)"
    return f"field {field.name} := {shown}", _replace_field(seed, field, new)


def flip_bits(seed: Seed, rng: random.Random) -> tuple[str, bytes]:
    data = bytearray(seed.data[:-4])
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return "bitflip", with_crc(bytes(data))


def flip_bits_in_section(seed: Seed, rng: random.Random) -> tuple[str, bytes]:
    """Bit flips inside one section body, which keeps the framing intact (the length is recomputed)."""
    i = rng.randrange(len(seed.sections))
    kind, body = seed.sections[i]
    body = bytearray(body)
    if not body:
        return flip_bits(seed, rng)
    lo = 0 if rng.random() < 0.5 else max(0, len(body) - 64)   # the side info is at the front
    hi = len(body) if lo else min(len(body), 256)
    for _ in range(rng.choice([1, 1, 2, 4])):
        body[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
    sections = list(seed.sections)
    sections[i] = (kind, bytes(body))
    return "section_bitflip", pack(sections, seed.model_id, version=seed.version)


def overwrite_bytes(seed: Seed, rng: random.Random) -> tuple[str, bytes]:
    data = bytearray(seed.data[:-4])
    start = rng.randrange(len(data))
    n = rng.choice([1, 2, 4, 8, 16])
    fill = rng.choice([0x00, 0xFF, 0x80, None])
    for j in range(start, min(start + n, len(data))):
        data[j] = rng.randrange(256) if fill is None else fill
    return "overwrite", with_crc(bytes(data))


def truncate_section(seed: Seed, rng: random.Random) -> tuple[str, bytes]:
    i = rng.randrange(len(seed.sections))
    kind, body = seed.sections[i]
    cut = rng.choice([0, 1, rng.randrange(len(body) + 1), len(body) - 1, len(body) - 4])
    sections = list(seed.sections)
    sections[i] = (kind, body[:max(cut, 0)])
    return "truncate_section", pack(sections, seed.model_id, version=seed.version)


def extend_section(seed: Seed, rng: random.Random) -> tuple[str, bytes]:
    i = rng.randrange(len(seed.sections))
    kind, body = seed.sections[i]
    tail = rng.choice([b"\x00", b"\x00" * 4, b"\xff" * 4, bytes(rng.randrange(256) for _ in range(9))])
    sections = list(seed.sections)
    sections[i] = (kind, body + tail)
    return "extend_section", pack(sections, seed.model_id, version=seed.version)


def inflate_section_length(seed: Seed, rng: random.Random) -> tuple[str, bytes]:
    """A section's length prefix made larger (or smaller) than its body, with the CRC recomputed."""
    i = rng.randrange(len(seed.sections))
    w = ByteWriter()
    w.raw(seed.data[:7])
    for j, (kind, body) in enumerate(seed.sections):
        n = len(body)
        if j == i:
            n = rng.choice([n + 1, n + 4, max(n - 1, 0), 2 * n, 1 << 31, (1 << 63) - 1, (1 << 64) - 1])
        w.u8(kind)
        w.raw(_uvarint(n) + body)
    return "inflate_section_length", with_crc(w.getvalue())


def rearrange_sections(seed: Seed, rng: random.Random) -> tuple[str, bytes]:
    sections = list(seed.sections)
    op = rng.choice(["swap", "duplicate", "drop", "reverse", "empty", "unknown_kind", "second_header",
                     "kind_change"])
    i, j = rng.randrange(len(sections)), rng.randrange(len(sections))
    if op == "swap":
        sections[i], sections[j] = sections[j], sections[i]
    elif op == "duplicate":
        sections.insert(j, sections[i])
    elif op == "drop":
        del sections[i]
    elif op == "reverse":
        sections.reverse()
    elif op == "empty":
        sections.insert(j, (rng.choice([1, 2, 3]), b""))
    elif op == "unknown_kind":
        sections.insert(j, (rng.choice([0, 4, 255]), sections[i][1]))
    elif op == "second_header":
        sections.append(sections[0])
    else:   # a TENSORS body labelled RESIDUAL or the other way round
        kind, body = sections[i]
        sections[i] = ({1: 2, 2: 3, 3: 2}[kind], body)
    return f"sections:{op}", pack(sections, seed.model_id, version=seed.version)


def change_preamble(seed: Seed, rng: random.Random) -> tuple[str, bytes]:
    op = rng.choice(["magic", "version", "model_id", "model_id"])
    if op == "magic":
        magic = rng.choice([b"nrva", b"NRVB", b"\x00NRV", b"RIFF"])
        return "preamble:magic", pack(seed.sections, seed.model_id, magic=magic, version=seed.version)
    if op == "version":   # 1 <-> 2 relabels a file: a v1 body is a valid v2 body, not the other way round
        return "preamble:version", pack(seed.sections, seed.model_id, version=rng.choice([0, 1, 2, 3, 255]))
    other = rng.choice([0, 1, 2, 3, 4, 5, 6, 0xFFFF])   # includes the other families' ids
    return "preamble:model_id", pack(seed.sections, other, version=seed.version)


def splice(seed: Seed, rng: random.Random, others: list[Seed]) -> tuple[str, bytes]:
    """A section replaced by one from another seed (another family's header or tensors)."""
    donor = rng.choice(others)
    i = rng.randrange(len(seed.sections))
    sections = list(seed.sections)
    sections[i] = rng.choice(donor.sections)
    return "splice", pack(sections, seed.model_id, version=seed.version)


def stack(seed: Seed, rng: random.Random) -> tuple[str, bytes]:
    """Two field mutations at once (e.g. an inflated count and a matching inflated stream)."""
    _, data = mutate_field(seed, rng)
    try:
        second = make_seed(seed.label, data)
    except Exception:   # the first mutation broke the structure walk: keep the single mutation
        return "stack", data
    return "stack", mutate_field(second, rng)[1]


OPERATORS = [(mutate_field, 8), (lambda s, r: mutate_field(s, r, only_header=True), 4),
             (flip_bits, 2), (flip_bits_in_section, 3), (overwrite_bytes, 2), (truncate_section, 2),
             (extend_section, 1), (inflate_section_length, 1), (rearrange_sections, 2),
             (change_preamble, 1), (stack, 2)]


def mutate(seed: Seed, rng: random.Random, others: list[Seed] = ()) -> tuple[str, bytes]:
    """One random mutation of `seed`, the CRC recomputed: (operator name, file bytes)."""
    ops = OPERATORS + ([(lambda s, r: splice(s, r, list(others)), 1)] if others else [])
    op = rng.choices([o for o, _ in ops], weights=[w for _, w in ops])[0]
    return op(seed, rng)


def header_cases(seed: Seed, per_field: int | None = None) -> list[tuple[str, bytes]]:
    """Every header field in turn, with every absurd value of its encoding (or `per_field` of them,
    the same ones on every run)."""
    rng = random.Random(0)
    cases = []
    for field in (f for f in seed.fields if f.section == 0):
        body = seed.sections[0][1]
        original = body[field.offset:field.offset + field.size]
        values = list(enumerate(absurd_encodings(field, original, rng)))
        if per_field is not None:
            values = random.Random(field.name).sample(values, min(per_field, len(values)))
        for i, new in values:
            cases.append((f"{field.name} := value {i}", _replace_field(seed, field, new)))
    return cases


# ---------------------------------------------------------------------------------------------
# Running one case.


@dataclasses.dataclass(frozen=True)
class Outcome:
    kind: str        # "ok", "format_error", "inconsistent" (parsed, but does not re-encode) or "crash"
    detail: str      # the error class and message, or "" for ok
    seconds: float   # CPU seconds of the reader (parse and dequantize), the re-encoding check excluded
    peak_bytes: int  # tracemalloc peak above the level at the start of the case


class Inconsistent(Exception):
    """An accepted file whose re-encoding parses to something else."""


def message_class(message: str) -> str:
    """A FormatError message with its numbers, tensor paths and quoted names blanked, explanation cut."""
    text = re.sub(r"'[^']*'?|tensor \S+|\d+", lambda m: "tensor #" if m[0].startswith("tensor") else "#",
                  message.split(":")[0])
    return text[:90]


def run_case(data: bytes, check_roundtrip: bool = True) -> Outcome:
    """Decompresses `data` (parse + dequantize) under tracemalloc; a parsed file must re-encode.

    A mutated file that parses is re-compressed from what was parsed, and that file must parse to
    the same config and symbols: the reader accepted only what the format can express.
    """
    from codec import api
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    t0 = time.process_time()
    try:
        config, collections, _ = api.parse(data)
        abstract = api.abstract_variables(config)   # what api.decompress does after parsing
        for name, (q, _) in collections.items():
            api.dequantize_variables(abstract[name], q)
        seconds = time.process_time() - t0   # the reader's time, not the re-encoding check's
        if check_roundtrip:
            _check_reencodes(api, config, collections)
        kind, detail = "ok", ""
    except FormatError as e:
        kind, detail = "format_error", str(e)
    except Inconsistent as e:
        kind, detail = "inconsistent", str(e)
    except Exception as e:   # noqa: BLE001 - any other exception is the finding
        kind, detail = "crash", f"{type(e).__name__}: {e}"
    if kind != "ok":
        seconds = time.process_time() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    if started:
        tracemalloc.stop()
    return Outcome(kind, detail, seconds, peak)


def _check_reencodes(api, config, collections) -> None:
    quantized = {f"{c}/{p}": q for c, (qs, _) in collections.items() for p, q in qs.items()}
    again, coll2, _ = api.parse(api.compress(config, quantized))
    if again != config:
        raise Inconsistent("a re-encoded accepted file parses to another config")
    for c, (qs, _) in collections.items():
        for p, q in qs.items():
            if not (q.symbols == coll2[c][0][p].symbols).all():
                raise Inconsistent(f"a re-encoded accepted file changes the symbols of {c}/{p}")
