"""Every error condition of codec/FORMAT.md §11 on a hand-made file whose CRC is valid, and the reader's bounds."""

import dataclasses
import math
import struct
import time
import tracemalloc
import zlib

import jax.numpy as jnp
import numpy as np
import pytest

from codec import api, container, entropy, header
from codec.bytesio import ByteReader, ByteWriter, FormatError
from inr import registry
from inr.config import Geometry

# ---------------------------------------------------------------------------------------------
# Hand-made files, written from FORMAT.md alone: header fields in the order of §4.3, tensors and
# shapes of the tiny() configs from §5, layout CRCs from §6.1. container.pack computes the CRC.

HEADER, TENSORS, RESIDUAL = 1, 2, 3
NERV_ID, HNERV_ID, NIRVANA_ID = 1, 2, 5
NERV_CRC, NIRVANA_CRC = 0xF9D3BD98, 0x227FBF4B

NERV_TENSORS = [("block0/up/conv/bias", (32,)), ("block0/up/conv/kernel", (3, 3, 8, 32)),
                ("block1/up/conv/bias", (32,)), ("block1/up/conv/kernel", (3, 3, 8, 32)),
                ("head/conv/bias", (3,)), ("head/conv/kernel", (1, 1, 8, 3)),
                ("stem0/dense/bias", (16,)), ("stem0/dense/kernel", (16, 16)),
                ("stem1/dense/bias", (768,)), ("stem1/dense/kernel", (16, 768))]
NIRVANA_TENSORS = [("cells/dense/bias", (16,)), ("cells/dense/kernel", (16, 16)),
                   ("heads/conv/bias", (12,)), ("heads/conv/kernel", (1, 1, 4, 12)),
                   ("siren0/dense/bias", (16,)), ("siren0/dense/kernel", (14, 16)),
                   ("siren1/dense/bias", (16,)), ("siren1/dense/kernel", (16, 16)),
                   ("up/conv/bias", (64,)), ("up/conv/kernel", (3, 3, 4, 64))]
NERV_ELEMENTS = 18027   # the sum of the products of NERV_TENSORS' shapes, by hand


def svarints(w: ByteWriter, *values: int) -> None:
    for v in values:
        w.svarint(v)


def geometry(w: ByteWriter, frames=8, height=32, width=48, fps_num=25, fps_den=1) -> None:
    svarints(w, frames, height, width, fps_num, fps_den)


def int_tuple(w: ByteWriter, values) -> None:
    w.uvarint(len(values))
    svarints(w, *values)


def nerv_header(frames=8, height=32, strides=(2, 2), channels=(8, 8), act=b"gelu", pe_levels=8) -> bytes:
    """NeRV tiny() (§4.3, 13 fields; the worked example of §13 holds the same bytes)."""
    w = ByteWriter()
    geometry(w, frames, height)
    int_tuple(w, strides)
    svarints(w, 8, 12, 16, 8)              # base_h, base_w, stem_width, stem_channels
    int_tuple(w, channels)
    w.f64(1.25)                            # pe_base
    svarints(w, pe_levels, 3)              # pe_levels, kernel
    w.blob(act)
    w.svarint(0)                           # cam_nodes
    w.f64(10.0)                            # cam_lr_mult
    return w.getvalue()


def hnerv_header(frames=8, embed_channels=4) -> bytes:
    """HNeRV tiny() (§4.3, 15 fields) with a 2 x 3 embedding of `embed_channels` channels."""
    w = ByteWriter()
    geometry(w, frames)
    int_tuple(w, (2, 2, 2, 2))             # strides
    svarints(w, 2, 3, 2, 3, embed_channels, 8)   # base_h, base_w, embed_h, embed_w, embed_channels, stem
    int_tuple(w, (8, 8, 8, 8))             # channels
    int_tuple(w, (1, 3, 5, 5))             # kernels
    int_tuple(w, (4, 4))                   # enc_strides
    w.svarint(8)                           # enc_dim
    w.blob(b"gelu")
    w.svarint(0)
    w.f64(10.0)
    return w.getvalue()


def nirvana_header(frames=8, width=16, depth=2) -> bytes:
    """NIRVANA tiny() (§4.3, 16 fields)."""
    w = ByteWriter()
    geometry(w, frames)
    svarints(w, 4, 2, 4, width, depth, 4, 4, 3)   # group, cell, up, width, depth, features, up_channels, L
    w.f64(1.0)                             # omega0
    w.f64(0.001)                           # rate_weight
    w.svarint(8)                           # init_bits
    w.f64(0.2)                             # warm_lr
    w.f64(0.0)                             # target_psnr
    w.svarint(0)                           # batch
    w.f64(0.25)                            # group0_share
    return w.getvalue()


def n_steps(shape) -> int:
    return shape[-1] if len(shape) >= 2 else 1


def uniform(lo: int, hi: int) -> bytes:
    w = ByteWriter()
    w.u8(0)
    svarints(w, lo, hi)
    return w.getvalue()


def laplace(lo: int, hi: int, n_theta: int, n_p0: int) -> bytes:
    w = ByteWriter()
    w.u8(1)
    svarints(w, lo, hi)
    w.u16(n_theta)
    w.u16(n_p0)
    return w.getvalue()


def f16(values) -> bytes:
    return np.asarray(values, "<f2").tobytes()


@dataclasses.dataclass
class Tensor:
    """One tensor's side information in a TENSORS body (§6) or, without steps, a RESIDUAL body (§6.2)."""

    bits: int = 4
    steps: bytes | None = None    # f16 bytes; None: a step count of 0 in RESIDUAL bodies is not written
    model: bytes = uniform(0, 0)  # a single-symbol model: nothing coded
    n_steps: int | None = None    # written step count, default len(steps) // 2


def zero_tensors(shapes, step: float = 2 ** -8, symbol: int = 0) -> list[Tensor]:
    return [Tensor(steps=f16([step] * n_steps(s)), model=uniform(symbol, symbol)) for _, s in shapes]


def tensors_body(tensors: list[Tensor], name=b"params", crc=NERV_CRC, count=None, stream=b"") -> bytes:
    w = ByteWriter()
    w.blob(name)
    w.u32(crc)
    w.uvarint(len(tensors) if count is None else count)
    for t in tensors:
        w.u8(t.bits)
        w.uvarint(len(t.steps) // 2 if t.n_steps is None else t.n_steps)
        w.raw(t.steps)
        w.raw(t.model)
    w.raw(stream)
    return w.getvalue()


def residual_body(models: list[bytes], name=b"group001", reference=b"group000", crc=NIRVANA_CRC,
                  bits=4, stream=b"") -> bytes:
    w = ByteWriter()
    w.blob(name)
    w.blob(reference)
    w.u32(crc)
    w.uvarint(len(models))
    for m in models:
        w.u8(bits)
        w.raw(m)
    w.raw(stream)
    return w.getvalue()


def pack(model_id: int, *sections: tuple[int, bytes], version: int = 1) -> bytes:
    return container.pack(model_id, [container.Section(kind, body) for kind, body in sections], version)


def nerv_file(head: bytes | None = None, tensors: list[Tensor] | None = None, version: int = 1, **body) -> bytes:
    tensors = zero_tensors(NERV_TENSORS) if tensors is None else tensors
    head = nerv_header() if head is None else head
    return pack(NERV_ID, (HEADER, head), (TENSORS, tensors_body(tensors, **body)), version=version)


def nirvana_file(group0_symbol=0, delta=0, residual=None, head=None) -> bytes:
    group0 = tensors_body(zero_tensors(NIRVANA_TENSORS, symbol=group0_symbol), name=b"group000", crc=NIRVANA_CRC)
    group1 = residual_body([uniform(delta, delta)] * 10) if residual is None else residual
    return pack(NIRVANA_ID, (HEADER, nirvana_header() if head is None else head), (TENSORS, group0),
                (RESIDUAL, group1))


def with_nerv_tensor(i: int, version: int = 1, **changes) -> bytes:
    """The zero NeRV file (of format `version`) with tensor i's side information changed."""
    tensors = zero_tensors(NERV_TENSORS)
    tensors[i] = dataclasses.replace(tensors[i], **changes)
    return nerv_file(tensors=tensors, version=version)


def refused(data: bytes, *words: str, decode: bool = False, fast: bool = False) -> str:
    """The one-line FormatError message of reading `data`, which must contain every one of `words`;
    with `fast`, the refusal must also take under 5 s, and a second one (the model traced again) under
    64 MiB of traced allocations: the unchecked reader took 28-51 s and 1.4-2 GB on such files."""
    read = api.decompress if decode else api.parse
    start = time.perf_counter()
    with pytest.raises(FormatError) as info:
        read(data)
    seconds = time.perf_counter() - start
    message = str(info.value)
    assert message.strip() and "\n" not in message, f"not a one-line message: {message!r}"
    for word in words:
        assert word in message, (word, message)
    if fast:
        api.abstract_variables.cache_clear()
        tracemalloc.start()
        try:
            with pytest.raises(FormatError):
                read(data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert seconds < 5.0 and peak < 64 << 20, (seconds, peak, message)
    return message


# ---------------------------------------------------------------------------------------------
# The hand-made files are valid, so each case below fails for its one defect only.


def test_the_hand_made_files_are_valid_and_decode_to_their_constant_weights():
    config, variables = api.decompress(nerv_file())
    assert (config.geometry.frames, config.geometry.height, config.geometry.width) == (8, 32, 48)
    assert all(not np.any(x) for _, x in api.flatten(variables))
    config, variables = api.decompress(nirvana_file(group0_symbol=3, delta=-1))
    weights = dict(api.flatten(variables))
    assert set(np.unique(weights["group000/up/conv/kernel"])) == {3 * 2 ** -8}
    assert set(np.unique(weights["group001/up/conv/kernel"])) == {2 * 2 ** -8}


# ---------------------------------------------------------------------------------------------
# FORMAT.md §11, row by row, in its order. Each case: (id naming the condition, file, words of the row).

GOOD_NERV = nerv_file()
GOOD_BODY = GOOD_NERV[:-4]


def _version(v: int) -> bytes:
    body = GOOD_BODY[:4] + bytes([v]) + GOOD_BODY[5:]
    return body + zlib.crc32(body).to_bytes(4, "little")


def _section_past_crc() -> bytes:
    body = GOOD_BODY[:7] + bytes([HEADER]) + b"\xe8\x07" + b"\x00" * 20   # a body length of 1000
    return body + zlib.crc32(body).to_bytes(4, "little")


def _bad_crc() -> bytes:
    return GOOD_BODY + ((zlib.crc32(GOOD_BODY) ^ 1).to_bytes(4, "little"))


def _varint(n_bytes: int, last: int) -> bytes:
    return b"\xff" * (n_bytes - 1) + bytes([last])


ROWS = [
    pytest.param(b"", ["file is empty"], id="zero bytes"),
    pytest.param(b"NRV", ["not a .nerva file", "bad magic"], id="fewer than 4 bytes"),
    pytest.param(b"RIFF" + GOOD_NERV[4:], ["not a .nerva file", "bad magic"], id="magic is not NRVA"),
    pytest.param(GOOD_NERV[:10], ["file is truncated"], id="fewer than 11 bytes"),
    pytest.param(_version(4), ["unsupported .nerva format version 4", "reads versions 1, 2 and 3"],
                 id="version byte 4"),
    pytest.param(_version(0), ["unsupported .nerva format version 0"], id="version byte 0"),
    pytest.param(_section_past_crc(), ["file is truncated or corrupted"], id="a section length runs past the CRC"),
    pytest.param(_bad_crc(), ["file is corrupted", "CRC32 checksum mismatch"], id="CRC mismatch"),
    pytest.param(pack(999, (HEADER, nerv_header())), ["file uses model id 999", "does not know"],
                 id="unknown model id"),
    pytest.param(pack(NERV_ID), ["file has no header section"], id="no sections"),
    pytest.param(pack(NERV_ID, (TENSORS, tensors_body(zero_tensors(NERV_TENSORS))), (HEADER, nerv_header())),
                 ["file has no header section"], id="the first section is not HEADER"),
    pytest.param(pack(NERV_ID, (HEADER, _varint(11, 0x00) + nerv_header()[1:]),
                      (TENSORS, tensors_body(zero_tensors(NERV_TENSORS)))),
                 ["file header", "malformed varint"], id="header varint with bit 7 set on its 10th byte"),
    pytest.param(pack(NERV_ID, (HEADER, _varint(10, 0x02) + nerv_header()[1:]),
                      (TENSORS, tensors_body(zero_tensors(NERV_TENSORS)))),
                 ["file header", "malformed varint"], id="header varint of 2^64 or more"),
    pytest.param(pack(NERV_ID, (HEADER, nerv_header()),
                      (TENSORS, b"\x06params" + struct.pack("<I", NERV_CRC) + _varint(10, 0x7f))),
                 ["tensors section", "malformed varint"], id="section varint of 2^64 or more"),
    pytest.param(nerv_file(head=nerv_header()[:10]), ["file header is truncated"],
                 id="header truncated before a field without default"),
    pytest.param(pack(NIRVANA_ID, (HEADER, nirvana_header()[:3])), ["file header is truncated"],
                 id="header body ends inside a nested class"),
    pytest.param(nerv_file(head=nerv_header(act=b"\xff\xfe")), ["file header", "not UTF-8"],
                 id="header string is not UTF-8"),
    pytest.param(nerv_file(head=nerv_header()[:5] + b"\x64" + nerv_header()[6:]),
                 ["file header", "impossible tuple length"], id="header tuple count larger than the bytes left"),
    pytest.param(nerv_file(head=nerv_header() + b"\x00"), ["file header", "unexpected trailing bytes"],
                 id="header bytes left after the last field"),
    pytest.param(nerv_file(head=nerv_header(frames=0)), ["file header does not describe a valid"],
                 id="header geometry value below 1"),
    pytest.param(nerv_file(head=nerv_header(act=b"gelu2")), ["file header does not describe a valid"],
                 id="header unknown act"),
    pytest.param(nerv_file(head=nerv_header(strides=(), channels=())), ["file header does not describe a valid"],
                 id="header with zero stages"),
    pytest.param(pack(NERV_ID, (HEADER, nerv_header())), ["file lacks collections"],
                 id="fewer sections than collections"),
    pytest.param(pack(NERV_ID, (HEADER, nerv_header()), (TENSORS, tensors_body(zero_tensors(NERV_TENSORS))),
                      (TENSORS, tensors_body(zero_tensors(NERV_TENSORS)))),
                 ["file holds 2 data sections, more than the 1 collections its header describes"],
                 id="more sections than collections"),
    pytest.param(pack(NERV_ID, (HEADER, nerv_header()), (9, tensors_body(zero_tensors(NERV_TENSORS)))),
                 ["file holds a section of unknown kind 9"], id="a section of unknown kind"),
    pytest.param(pack(NERV_ID, (HEADER, nerv_header()), (HEADER, nerv_header())),
                 ["file holds a section of unknown kind 1"], id="a second HEADER in place of a data section"),
    pytest.param(nerv_file(name=b"parans"), ["file holds an unexpected collection 'parans'"],
                 id="collection name not among the model's"),
    pytest.param(pack(NIRVANA_ID, (HEADER, nirvana_header()),
                      (TENSORS, tensors_body(zero_tensors(NIRVANA_TENSORS), name=b"group000", crc=NIRVANA_CRC)),
                      (TENSORS, tensors_body(zero_tensors(NIRVANA_TENSORS), name=b"group000", crc=NIRVANA_CRC))),
                 ["file holds an unexpected collection 'group000'"], id="collection name repeated"),
    pytest.param(pack(NIRVANA_ID, (HEADER, nirvana_header()),
                      (TENSORS, tensors_body(zero_tensors(NIRVANA_TENSORS), name=b"group000", crc=NIRVANA_CRC)),
                      (TENSORS, tensors_body(zero_tensors(NIRVANA_TENSORS), name=b"group001", crc=NIRVANA_CRC))),
                 ["collection 'group001' must be residual-coded against 'group000'"],
                 id="TENSORS for a residual-coded collection"),
    pytest.param(nirvana_file(residual=residual_body([uniform(0, 0)] * 10, reference=b"group001")),
                 ["collection 'group001' refers to 'group001'", "chains it to"],
                 id="RESIDUAL naming another reference than the model's"),
    pytest.param(pack(NIRVANA_ID, (HEADER, nirvana_header()),
                      (RESIDUAL, residual_body([uniform(0, 0)] * 10, name=b"group000", reference=b"group001")),
                      (RESIDUAL, residual_body([uniform(0, 0)] * 10))),
                 ["collection 'group000' refers to 'group001'", "chains it to"],
                 id="RESIDUAL for a collection the model does not residual-code"),
    pytest.param(pack(NIRVANA_ID, (HEADER, nirvana_header()), (RESIDUAL, residual_body([uniform(0, 0)] * 10)),
                      (TENSORS, tensors_body(zero_tensors(NIRVANA_TENSORS), name=b"group000", crc=NIRVANA_CRC))),
                 ["collection 'group001' refers to 'group000'", "decoded before it"],
                 id="RESIDUAL whose reference is not decoded from an earlier section"),
    pytest.param(nerv_file(crc=NERV_CRC ^ 1), ["collection 'params' was written for a different parameter layout"],
                 id="layout CRC mismatch"),
    pytest.param(nerv_file(count=11), ["collection 'params' has the wrong number of tensors"],
                 id="tensor count mismatch"),
    pytest.param(with_nerv_tensor(0, bits=0), ["tensor params/block0/up/conv/bias",
                                               "invalid quantization side information"], id="bits 0"),
    pytest.param(with_nerv_tensor(1, bits=17), ["tensor params/block0/up/conv/kernel",
                                                "invalid quantization side information"], id="bits 17"),
    pytest.param(with_nerv_tensor(1, steps=f16([0.0] * 8)), ["tensor params/block0/up/conv/kernel",
                                                             "invalid quantization side information"],
                 id="step count is not the channel count"),
    pytest.param(with_nerv_tensor(1, steps=f16([0.0])), ["tensor params/block0/up/conv/kernel",
                                                         "invalid quantization side information",
                                                         "1 steps, where a version-1 file allows 32"],
                 id="version 1: a single step for a tensor of 32 channels"),
    pytest.param(with_nerv_tensor(1, version=2, steps=f16([0.0] * 8)),
                 ["tensor params/block0/up/conv/kernel", "invalid quantization side information",
                  "8 steps, where a version-2 file allows 32 or 1"],
                 id="version 2: step count neither 1 nor the channel count"),
    pytest.param(with_nerv_tensor(0, version=2, steps=f16([0.0] * 2)),
                 ["tensor params/block0/up/conv/bias", "2 steps, where a version-2 file allows 1"],
                 id="version 2: two steps for a 1-D tensor"),
    pytest.param(nirvana_file(residual=residual_body([uniform(0, 0)] * 10, bits=0)),
                 ["tensor group001/cells/dense/bias", "invalid quantization side information"],
                 id="RESIDUAL bits 0"),
    pytest.param(with_nerv_tensor(0, steps=f16([-1.0])), ["negative (or -0.0) or non-finite quantization step"],
                 id="a negative step"),
    pytest.param(with_nerv_tensor(0, steps=b"\x00\x80"), ["negative (or -0.0) or non-finite quantization step"],
                 id="a -0.0 step"),
    pytest.param(with_nerv_tensor(0, steps=f16([np.nan])), ["negative (or -0.0) or non-finite quantization step"],
                 id="a NaN step"),
    pytest.param(with_nerv_tensor(0, steps=f16([np.inf])), ["negative (or -0.0) or non-finite quantization step"],
                 id="an infinite step"),
    pytest.param(pack(NERV_ID, (HEADER, nerv_header()), (TENSORS, tensors_body(zero_tensors(NERV_TENSORS))[:40])),
                 ["tensors section is truncated"], id="a read past the end of a TENSORS body"),
    pytest.param(nirvana_file(residual=residual_body([uniform(0, 0)] * 10)[:30]),
                 ["residual section is truncated"], id="a read past the end of a RESIDUAL body"),
    pytest.param(pack(NERV_ID, (HEADER, nerv_header()), (TENSORS, b"\x06par")),
                 ["tensors or residual section is truncated"], id="a body too short for its collection name"),
    pytest.param(with_nerv_tensor(0, model=b"\x03\x00\x00"), ["bad entropy model header"], id="model kind 3"),
    pytest.param(with_nerv_tensor(0, model=uniform(1, 0)), ["bad entropy model header"], id="model lo above hi"),
    pytest.param(with_nerv_tensor(0, model=uniform(0, 1 << 20)), ["bad entropy model header"],
                 id="model support above 2^20"),
    pytest.param(with_nerv_tensor(0, model=laplace(-1, 1, 0, 0)), ["invalid entropy model"],
                 id="LAPLACE n_theta 0"),
    pytest.param(with_nerv_tensor(0, model=b"\x02\x00\x02\x02\x01\x01"), ["invalid entropy model"],
                 id="HISTOGRAM frequencies not summing to 2^p"),
    pytest.param(with_nerv_tensor(0, model=b"\x02\x00\x02\x01\x02\x00\x05"), ["zero run past the end"],
                 id="HISTOGRAM zero run past the support"),
    pytest.param(nerv_file(tensors=[Tensor(steps=f16([0.0]), model=uniform(0, 1))] + zero_tensors(NERV_TENSORS)[1:],
                           stream=b"\x00" * 6), ["not a whole number of 32-bit words"],
                 id="stream length not a multiple of 4"),
    pytest.param(with_nerv_tensor(1, model=uniform(0, 1)),   # 2304 bits at least, past the 64 of slack
                 ["entropy-coded payload of 0 words is too short for its symbols", "at least 2304 bits"],
                 id="a coded tensor with an empty stream"),
    pytest.param(nerv_file(tensors=[Tensor(steps=f16([0.0]), model=uniform(0, 1))] + zero_tensors(NERV_TENSORS)[1:],
                           stream=b"\xff" * 8), ["entropy-coded payload failed to decode"], id="decoder error"),
    pytest.param(nirvana_file(group0_symbol=(1 << 31) - 1, delta=1), ["tensor group001/cells/dense/bias",
                                                                     "leaves the int32 range"],
                 id="RESIDUAL symbol above int32"),
    pytest.param(nirvana_file(group0_symbol=-(1 << 31), delta=-1), ["tensor group001/cells/dense/bias",
                                                                   "leaves the int32 range"],
                 id="RESIDUAL symbol below int32"),
]


@pytest.mark.parametrize("data,words", ROWS)
def test_each_error_condition_of_section_11_is_a_one_line_format_error(data, words):
    refused(data, *words)


def test_a_stream_not_exhausted_after_the_last_symbol_is_refused():
    tensors = [Tensor(steps=f16([0.0]), model=uniform(0, 1))] + zero_tensors(NERV_TENSORS)[1:]
    stream = entropy.encode([(np.zeros(32, np.int64), entropy.EntropyModel(entropy.UNIFORM, 0, 1, ()))])
    api.parse(nerv_file(tensors=tensors, stream=stream))   # the stream itself is valid
    refused(nerv_file(tensors=tensors, stream=stream + b"\xff" * 8), "payload does not end after the last array")


# ---------------------------------------------------------------------------------------------
# A model family made for these tests, so that the rows about building and rendering a model can be
# reached whatever the real families' header constraints refuse first.


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    geometry: Geometry
    rows: int        # rows the model renders (the geometry's height when they agree)
    fail: int = 0    # 1: init raises, 2: render raises


def _toy_init(config, key):
    if config.fail == 1:
        raise ZeroDivisionError("division by zero")
    return {"params": {"w": jnp.zeros((1,))}}


def _toy_render(config, variables, idx):
    if config.fail == 2:
        raise IndexError("tuple index out of range")
    return jnp.zeros((idx.shape[0], config.rows, config.geometry.width, 3)) + variables["params"]["w"]


TOY_ID = 65000
TOY = registry.ModelSpec(name="toy-for-format-errors", model_id=TOY_ID, config_cls=ToyConfig, init=_toy_init,
                         render=_toy_render, for_size=None)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry._BY_ID, TOY_ID, TOY)
    monkeypatch.setitem(registry._BY_NAME, TOY.name, TOY)


def toy_file(rows: int, fail: int = 0, height: int = 32) -> bytes:
    w = ByteWriter()
    geometry(w, 4, height, 48)
    svarints(w, rows, fail)
    params = tensors_body([Tensor(steps=f16([0.0]))], crc=zlib.crc32(b"w:1"))   # §6.1: "path:dims"
    return pack(TOY_ID, (HEADER, w.getvalue()), (TENSORS, params))


def test_a_model_that_cannot_be_built_from_its_header_is_a_format_error(toy):
    api.parse(toy_file(rows=32))
    refused(toy_file(rows=32, fail=1), "file header describes a ToyConfig that cannot be built",
            "division by zero")


def test_a_header_whose_geometry_disagrees_with_the_rendered_frames_is_refused_before_decoding(toy):
    config, _ = api.decompress(toy_file(rows=32))
    assert api.rendered_shape(config) == (1, 32, 48, 3)
    api.parse(toy_file(rows=40))   # parsing does not render: `nerva info` stays fast
    refused(toy_file(rows=40), "file header's geometry (32x48) disagrees with the frames its model renders",
            "(1, 40, 48, 3)", decode=True)
    refused(toy_file(rows=32, fail=2), "cannot render a frame", "tuple index out of range", decode=True)


# ---------------------------------------------------------------------------------------------
# The reader's bounds (FORMAT.md §3, §5.1, §7.4, §8.3): each refused fast, each at its exact limit.


def test_a_nirvana_header_claiming_more_groups_than_sections_is_refused_before_tracing(monkeypatch):
    def never(config):
        raise AssertionError("the model was traced")
    never.cache_clear = lambda: None
    monkeypatch.setattr(api, "abstract_variables", never)
    data = pack(NIRVANA_ID, (HEADER, nirvana_header(frames=100_000)), (TENSORS, b""), (RESIDUAL, b""))
    assert len(data) < 80
    refused(data, "file lacks collections", "describes 25000", "holds 2 data sections", fast=True)


def outcome(data: bytes) -> str:
    """'ok', or the message of the FormatError that parsing `data` raises."""
    try:
        api.parse(data)
    except FormatError as e:
        return str(e)
    return "ok"


def test_the_parameter_limit_is_2_to_the_20_plus_1024_per_file_byte_exactly():
    """HNeRV latents: frames · 2 · 3 · embed_channels elements plus the decoder's, checked before any
    section is decoded, so sections of chosen lengths set the file's length."""
    head = hnerv_header(frames=1000, embed_channels=1000)
    elements = 1000 * 2 * 3 * 1000 + _decoder_elements(head)

    def file_of(n_bytes: int) -> bytes:
        for pad in range(n_bytes, -1, -1):
            data = pack(HNERV_ID, (HEADER, head), (TENSORS, b"\x00" * pad), (TENSORS, b""))
            if len(data) == n_bytes:
                return data
        raise AssertionError(n_bytes)

    threshold = math.ceil((elements - (1 << 20)) / 1024)   # the shortest file that may hold them
    assert "unexpected collection ''" in outcome(file_of(threshold))   # past the limit, refused for its name
    refused(file_of(threshold - 1), f"file header describes {elements} parameters, more than the "
            f"{(1 << 20) + 1024 * (threshold - 1)} a file of {threshold - 1} bytes may hold", fast=True)


def _config_of(model_id: int, head: bytes):
    return header.read_config(registry.get_by_id(model_id).config_cls, head)


def _decoder_elements(head: bytes) -> int:
    """HNeRV tiny()'s decoder (§5) with the header's embed_channels, by hand."""
    config = _config_of(HNERV_ID, head)
    c_e, stem = config.embed_channels, 8 * 1 * 1
    stages = [(1, 8, 8 * 4), (3, 8, 8 * 4), (5, 8, 8 * 4), (5, 8, 8 * 4)]   # (kernel, in, out·stride²)
    return (c_e * stem + stem + sum(k * k * i * o + o for k, i, o in stages) + 3 * 3 * 8 * 3 + 3)


def test_a_tiny_file_claiming_a_hundred_million_parameters_is_refused_fast():
    head = hnerv_header(frames=2 ** 14, embed_channels=1024)   # 2^14 · 6 · 1024 ≈ 10^8 latents
    refused(pack(HNERV_ID, (HEADER, head), (TENSORS, b""), (TENSORS, b"")), "parameters, more than the",
            fast=True)
    head = nirvana_header(width=16384, depth=64)   # 64 SIREN layers of 16384² weights per group
    refused(pack(NIRVANA_ID, (HEADER, head), (TENSORS, b""), (RESIDUAL, b"")), "parameters, more than the",
            fast=True)


def test_a_tensor_that_codes_nothing_costs_the_reader_no_memory():
    head = hnerv_header(frames=1000, embed_channels=100)   # 600,000 latents, all one symbol
    sections = []
    for name, abstract in sorted(api.abstract_variables(_config_of(HNERV_ID, head)).items()):
        flat = [(p, tuple(x.shape)) for p, x in api.flatten(abstract)]
        crc = zlib.crc32(";".join(f"{p}:{'x'.join(map(str, shape))}" for p, shape in flat).encode())   # §6.1
        sections.append((TENSORS, tensors_body(zero_tensors(flat), name=name.encode(), crc=crc)))
    data = pack(HNERV_ID, (HEADER, head), *sections)
    tracemalloc.start()
    _, collections, _ = api.parse(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert collections["latents"][0]["embedding"].symbols.shape == (1000, 2, 3, 100)
    assert peak < 600_000   # the symbols as int32 would take 2.4 MB


def _table_file(models: list[bytes]) -> bytes:
    """The zero NeRV file with the first len(models) tensors' models replaced (no stream needed:
    the budget is checked while the models are read)."""
    tensors = zero_tensors(NERV_TENSORS)
    for i, m in enumerate(models):
        tensors[i] = dataclasses.replace(tensors[i], model=m)
    return nerv_file(tensors=tensors)


def test_the_table_budget_is_2_to_the_20_plus_64_per_file_byte_counted_by_support_exactly():
    widest = uniform(0, (1 << 20) - 1)              # the largest support a model may have (§7)
    probe = _table_file([widest, uniform(0, 1 << 17)])   # fixes the varint sizes, so the file's length
    limit = (1 << 20) + 64 * len(probe)
    support = limit - (1 << 20) - 8                 # the 8 other tensors' one-symbol models: 1 entry each
    at_limit = _table_file([widest, uniform(0, support - 1)])
    over = _table_file([widest, uniform(0, support)])
    assert len(at_limit) == len(over) == len(probe)
    message = outcome(at_limit)
    assert "too short for its symbols" in message   # past the budget, refused for its empty stream
    refused(over, f"file's entropy models ask for more than the {limit} table entries", fast=True)


def test_a_laplace_model_also_costs_its_powers_of_theta():
    far = 1 << 30    # a one-symbol support far from zero: 1 entry, plus 2^20 powers when LAPLACE
    api.parse(_table_file([uniform(far, far)] * 2))
    refused(_table_file([laplace(far, far, 65535, 0)] * 2), "table entries", fast=True)


def test_a_hundred_wide_histograms_in_a_few_kilobytes_are_refused_fast():
    w = ByteWriter()   # HISTOGRAM over 2^20 symbols, p = 1: frequencies 1, 2^20 - 2 zeros, 1
    w.u8(2)
    svarints(w, 0, (1 << 20) - 1)
    w.u8(1)
    for v in (1, 0, (1 << 20) - 3, 1):
        w.uvarint(v)
    wide = w.getvalue()
    group0 = [dataclasses.replace(t, model=wide) for t in zero_tensors(NIRVANA_TENSORS)]
    sections = [(TENSORS, tensors_body(group0, name=b"group000", crc=NIRVANA_CRC))]
    sections += [(RESIDUAL, residual_body([wide] * 10, name=f"group{k:03d}".encode(),
                                          reference=f"group{k - 1:03d}".encode())) for k in range(1, 10)]
    data = pack(NIRVANA_ID, (HEADER, nirvana_header(frames=40)), *sections)   # 10 groups, 100 tables
    assert len(data) < 7000
    refused(data, "table entries", fast=True)


def test_a_stream_must_hold_one_bit_per_element_of_a_two_symbol_uniform_model_less_two_words_of_slack():
    """Every tensor UNIFORM over {0, 1}: NERV_ELEMENTS bits at least; refused iff bits > 32·(W + 2)."""
    tensors = [dataclasses.replace(t, model=uniform(0, 1)) for t in zero_tensors(NERV_TENSORS)]
    shortest = math.ceil(NERV_ELEMENTS / 32) - 2      # 32·(W + 2) >= 18027 from W = 562
    assert "too short" not in outcome(nerv_file(tensors=tensors, stream=b"\x00" * 4 * shortest))
    refused(nerv_file(tensors=tensors, stream=b"\x00" * 4 * (shortest - 1)),
            f"payload of {shortest - 1} words is too short for its symbols", f"at least {NERV_ELEMENTS} bits")


def test_a_coded_tensor_of_fifty_million_elements_with_an_empty_stream_is_refused_fast():
    head = hnerv_header(frames=2 ** 20 // 16, embed_channels=128)   # 65536 · 6 · 128 = 5·10^7 latents
    refused(pack(HNERV_ID, (HEADER, head), (TENSORS, b""), (TENSORS, b"")), "parameters, more than the",
            fast=True)


# ---------------------------------------------------------------------------------------------
# The other rules of the reader, each with the case it admits and the one it refuses.


def test_header_defaults_are_filled_only_at_the_end_of_the_top_level_class():
    cls = registry.get_by_id(NIRVANA_ID).config_cls
    body = nirvana_header()
    geometry_only = ByteWriter()
    geometry(geometry_only)
    assert header.read_config(cls, geometry_only.getvalue()) == cls(Geometry(8, 32, 48, 25, 1))
    for cut in (1, 2, 3, 4):   # inside Geometry, whose fps fields have defaults too
        with pytest.raises(FormatError, match="file header is truncated"):
            header.read_config(cls, body[:cut])
    with pytest.raises(FormatError, match="file header is truncated"):
        header.read_config(cls, body[:-3])   # inside the last top-level field (an f64)


def test_any_exception_while_building_a_config_is_an_invalid_header():
    @dataclasses.dataclass(frozen=True)
    class Divides:
        n: int

        def __post_init__(self):
            1 // self.n

    w = ByteWriter()
    w.svarint(0)
    with pytest.raises(FormatError, match=r"^file header does not describe a valid Divides: "
                                          r"integer division or modulo by zero$"):
        header.read_config(Divides, w.getvalue())


def test_varints_hold_at_most_64_bits():
    assert ByteReader(_varint(10, 0x01)).uvarint() == (1 << 64) - 1
    assert ByteReader(b"\x90\x00").uvarint() == 16   # non-minimal forms stay accepted (§15 note 10)
    for bad in (_varint(10, 0x02), _varint(10, 0x81) + b"\x00"):
        with pytest.raises(FormatError, match="malformed varint at offset 0"):
            ByteReader(bad).uvarint()


def test_a_zero_step_is_accepted_and_a_negative_zero_step_refused():
    data = with_nerv_tensor(0, steps=b"\x00\x00")
    _, variables = api.decompress(data)
    assert not np.any(variables["params"]["block0"]["up"]["conv"]["bias"])
    refused(with_nerv_tensor(0, steps=b"\x00\x80"), "-0.0")


def test_names_read_from_the_file_are_cut_in_messages():
    message = refused(nerv_file(name=b"x" * 1000), "file holds an unexpected collection 'xxxx")
    assert message.endswith("x...'") and len(message) < 100
    message = refused(nirvana_file(residual=residual_body([uniform(0, 0)] * 10, reference=b"\x06" * 500)),
                      "collection 'group001' refers to '\\x06")
    assert len(message) < 400
