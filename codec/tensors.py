"""TENSORS and RESIDUAL sections: one variable collection, quantized per channel, entropy-coded in one stream.

TENSORS body: collection name (varint length + UTF-8) | u32 layout CRC (codec.params.layout_crc) |
varint tensor count | per tensor, in sorted path order: u8 bits, varint step count, float16 steps,
entropy model (codec.entropy) | the coded stream (all tensors' symbols, same order) to the end of the body.
The step count is the channel count (one step per output channel); from format version 2 it may also be
1, one step for the whole tensor (FORMAT.md §6), and a file is written as the lowest version its steps need.

RESIDUAL body (a collection coded as the difference to an earlier one with the same layout, e.g. NIRVANA's
group k against group k-1): collection name | reference collection name | u32 layout CRC | varint tensor
count | per tensor: u8 bits, entropy model | the coded stream of (symbols - reference symbols). Steps are
the reference's: a residual is only meaningful on the same quantization grid.

Decoded symbols of a tensor whose entropy model codes nothing are a read-only broadcast of its one symbol
(and a zero residual shares its reference's array), so they cost no memory however large the tensor.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from codec import entropy
from codec.bytesio import ByteReader, ByteWriter, FormatError
from codec.params import flatten, layout_crc
from codec.quant import QuantizedTensor


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """What `nerva info` reports per tensor."""

    path: str
    shape: tuple[int, ...]
    bits: int
    model: "entropy.EntropyModel"
    side_bytes: int        # steps + entropy model bytes
    ideal_bits: float      # payload bits under the model in the file (the coder is within ~0.01% of it)


# The first format version whose TENSORS entries may hold a single step for a tensor of several channels.
SINGLE_STEP_VERSION = 2
NEWEST_VERSION = 2


def step_counts(shape: tuple[int, ...], version: int) -> tuple[int, ...]:
    """Step counts a TENSORS entry of `shape` may store in a file of format `version` (FORMAT.md §6):
    the channel count, and from version 2 also 1 (one step broadcast over the whole tensor)."""
    channels = _n_steps(shape)
    return tuple(dict.fromkeys((channels, 1))) if version >= SINGLE_STEP_VERSION else (channels,)


def version_needed(abstract, quantized: dict[str, QuantizedTensor]) -> int:
    """The lowest format version that holds `quantized` ('collection/path' keys, shapes from `abstract`,
    {collection: tree}): 2 if some tensor has a single step where its shape has several channels, else 1,
    so files with per-channel steps only stay version-1 files byte for byte."""
    shapes = {p: tuple(x.shape) for p, x in flatten(abstract)}
    single = any(q.steps.size == 1 != _n_steps(shapes[p]) for p, q in quantized.items() if p in shapes)
    return SINGLE_STEP_VERSION if single else 1


def encode_collection(name: str, abstract, quantized: dict[str, QuantizedTensor]) -> bytes:
    """Body of a TENSORS section for collection `name`; `abstract` gives its paths and shapes. Each
    tensor's steps are one per channel or a single one (the latter needs format version 2)."""
    w = ByteWriter()
    w.blob(name.encode())
    w.u32(layout_crc(abstract))
    flat = [(p, tuple(x.shape)) for p, x in flatten(abstract)]
    w.uvarint(len(flat))
    arrays = []
    for p, shape in flat:
        q = quantized[p]
        if q.steps.size not in step_counts(shape, NEWEST_VERSION):
            raise ValueError(f"{name}/{p}: {q.steps.size} quantization steps for shape {shape}; "
                             f"a tensor has {_n_steps(shape)} (one per output channel) or 1")
        model = entropy.fit_model(q.symbols, q.kinds)
        w.u8(q.bits)
        w.uvarint(q.steps.size)
        w.raw(q.steps.astype("<f2").tobytes())
        w.raw(model.to_bytes())
        arrays.append((q.symbols.ravel(), model))
    w.raw(entropy.encode(arrays))
    return w.getvalue()


def encode_residual(name: str, reference: str, abstract, quantized: dict[str, QuantizedTensor],
                    ref_quantized: dict[str, QuantizedTensor]) -> bytes:
    """Body of a RESIDUAL section: `quantized` coded as its difference to `ref_quantized`."""
    w = ByteWriter()
    w.blob(name.encode())
    w.blob(reference.encode())
    w.u32(layout_crc(abstract))
    paths = [p for p, _ in flatten(abstract)]
    w.uvarint(len(paths))
    arrays = []
    for p in paths:
        q, ref = quantized[p], ref_quantized[p]
        if not np.array_equal(q.steps, ref.steps):
            raise ValueError(f"{name}/{p}: a residual needs the reference's quantization steps")
        delta = q.symbols.astype(np.int64) - ref.symbols.astype(np.int64)
        model = entropy.fit_model(delta, q.kinds)
        w.u8(q.bits)
        w.raw(model.to_bytes())
        arrays.append((delta.ravel(), model))
    w.raw(entropy.encode(arrays))
    return w.getvalue()


def residual_reference(body: bytes) -> str:
    r = ByteReader(body, "residual section")
    r.blob()
    return r.blob().decode(errors="replace")


def decode_residual(body: bytes, abstract, ref_quantized: dict[str, QuantizedTensor],
                    budget: entropy.TableBudget | None = None
                    ) -> tuple[dict[str, QuantizedTensor], list[TensorInfo]]:
    """Inverse of `encode_residual`, given the already decoded reference collection; `budget` bounds
    the file's entropy tables (FORMAT.md §7.4)."""
    r = ByteReader(body, "residual section")
    name = r.blob().decode(errors="replace")
    r.blob()
    shapes = _read_layout(r, name, abstract)
    metas = []
    for p, shape in shapes:
        start = r.pos
        bits = r.u8()
        if not 1 <= bits <= 16:
            raise FormatError(f"tensor {name}/{p} has invalid quantization side information")
        metas.append((p, shape, bits, entropy.EntropyModel.from_reader(r, budget), r.pos - start))
    deltas = entropy.decode(r.raw(r.remaining()), [(math.prod(m[1]), m[3]) for m in metas])
    out, infos = {}, []
    for (p, shape, bits, model, side), delta in zip(metas, deltas):
        delta = delta.reshape(shape)
        ref = ref_quantized[p]
        out[p] = QuantizedTensor(_add_residual(name, p, ref.symbols, delta, model), ref.steps, bits)
        infos.append(TensorInfo(p, shape, bits, model, side, _ideal_bits(delta, model)))
    return out, infos


def _add_residual(name: str, path: str, ref: np.ndarray, delta: np.ndarray, model) -> np.ndarray:
    """ref + delta, computed exactly and refused if it leaves int32 (FORMAT.md §6.2)."""
    if delta.size and entropy.codes_nothing(model) and int(delta.flat[0]) == 0:
        return ref   # a static group keeps its reference's integers: no work, no memory
    sym = ref.astype(np.int64) + delta
    if sym.size and (sym.min() < np.iinfo(np.int32).min or sym.max() > np.iinfo(np.int32).max):
        raise FormatError(f"tensor {name}/{path} leaves the int32 range")
    return sym.astype(np.int32)


def _ideal_bits(symbols: np.ndarray, model) -> float:
    """Payload bits of a tensor under its model; 0 without reading a tensor that codes nothing."""
    return 0.0 if entropy.codes_nothing(model) else entropy.ideal_bits(symbols, model)


def _n_steps(shape: tuple[int, ...]) -> int:
    """The channel count: one step per output channel (last axis) for ndim >= 2, one per tensor otherwise."""
    return shape[-1] if len(shape) >= 2 else 1


def collection_name(body: bytes) -> str:
    """The collection name that starts a TENSORS or RESIDUAL body."""
    return ByteReader(body, "tensors or residual section").blob().decode(errors="replace")


def _read_layout(r: ByteReader, name: str, abstract) -> list[tuple[str, tuple[int, ...]]]:
    """Reads and checks the layout CRC and tensor count; returns the collection's (path, shape) list."""
    if r.u32() != layout_crc(abstract):
        raise FormatError(f"collection {name!r} was written for a different parameter layout "
                          "(the file and this nerva disagree on the model's structure)")
    shapes = [(p, tuple(x.shape)) for p, x in flatten(abstract)]
    if r.uvarint() != len(shapes):
        raise FormatError(f"collection {name!r} has the wrong number of tensors")
    return shapes


def decode_collection(body: bytes, abstract, budget: entropy.TableBudget | None = None,
                      version: int = NEWEST_VERSION) -> tuple[dict[str, QuantizedTensor], list[TensorInfo]]:
    """Inverse of `encode_collection`: quantized tensors by path, plus per-tensor info; `budget` bounds
    the file's entropy tables (FORMAT.md §7.4), `version` (the file's format version) the step counts
    allowed (a version-1 file must have one step per channel)."""
    r = ByteReader(body, "tensors section")
    name = r.blob().decode(errors="replace")
    shapes = _read_layout(r, name, abstract)
    metas = []
    for p, shape in shapes:
        start = r.pos
        bits, n_steps = r.u8(), r.uvarint()
        if not 1 <= bits <= 16:
            raise FormatError(f"tensor {name}/{p} has invalid quantization side information")
        allowed = step_counts(shape, version)
        if n_steps not in allowed:
            raise FormatError(f"tensor {name}/{p} has invalid quantization side information: {n_steps} "
                              f"steps, where a version-{version} file allows "
                              f"{' or '.join(map(str, allowed))}")
        steps = np.frombuffer(r.raw(2 * n_steps), "<f2").astype(np.float16)
        # The sign bit is tested, not `< 0`: -0.0 is refused too, so a zero step has one encoding (FORMAT.md §6).
        if not np.all(np.isfinite(steps)) or np.any(np.signbit(steps)):
            raise FormatError(f"tensor {name}/{p} has a negative (or -0.0) or non-finite quantization step")
        model = entropy.EntropyModel.from_reader(r, budget)
        metas.append((p, shape, bits, steps, model, r.pos - start))
    symbols = entropy.decode(r.raw(r.remaining()), [(math.prod(m[1]), m[4]) for m in metas])
    out, infos = {}, []
    for (p, shape, bits, steps, model, side), sym in zip(metas, symbols):
        sym = sym.reshape(shape)
        out[p] = QuantizedTensor(sym, steps, bits)
        infos.append(TensorInfo(p, shape, bits, model, side, _ideal_bits(sym, model)))
    return out, infos
