"""Format version 2 (codec/FORMAT.md §2, §6): one step for a whole tensor, and a file is v2 only when it has one."""

import hashlib
import json
import pathlib
import zlib

import jax
import numpy as np
import pytest

import inr
from codec import api, cli, container, tensors
from codec.params import flatten
from codec.quant import QuantizedTensor, quantize, quantize_with_steps
from inr.config import Geometry
from test_format_errors import NERV_TENSORS, f16, refused, uniform, with_nerv_tensor
from test_format_golden import symbols_sha256

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
V1_DIR, V2_DIR = DATA / "format_v1", DATA / "format_v2"


def golden_v2(name: str = "nerv") -> tuple[bytes, dict]:
    path = V2_DIR / f"{name}.nerva"
    return path.read_bytes(), json.loads(path.with_suffix(".json").read_text())


def with_version(data: bytes, version: int) -> bytes:
    """`data` with its version byte (offset 4) replaced and the CRC recomputed, so the reader gets past it."""
    body = data[:4] + bytes([version]) + data[5:-4]
    return body + zlib.crc32(body).to_bytes(4, "little")


def channels(shape) -> int:
    """FORMAT.md §9: the last axis for rank >= 2, else 1."""
    return shape[-1] if len(shape) >= 2 else 1


@pytest.fixture(scope="module")
def nerv_tiny():
    spec = inr.get("nerv")
    config = spec.config_cls.tiny()
    return config, jax.jit(spec.init, static_argnums=0)(config, jax.random.key(0))


def one_step_each(variables, step: float = 2 ** -9) -> dict[str, QuantizedTensor]:
    """Every tensor on one grid of `step` for all its elements, as rate-aware training stores it."""
    return {p: quantize_with_steps(np.asarray(x), np.array([step])) for p, x in flatten(variables)}


# ---------------------------------------------------------------------------------------------
# Writing: the version is the lowest the steps need.


def test_a_file_with_one_step_per_tensor_is_version_2_and_round_trips_bit_exactly(nerv_tiny):
    config, variables = nerv_tiny
    quantized = one_step_each(variables)
    data = api.compress(config, quantized)
    assert data[:5] == b"NRVA\x02"
    _, collections, _ = api.parse(data)
    got = {f"params/{p}": q for p, q in collections["params"][0].items()}
    assert set(got) == set(quantized)
    for p, q in quantized.items():
        np.testing.assert_array_equal(got[p].symbols, q.symbols)
        assert got[p].steps.tobytes() == np.float16(2 ** -9).tobytes()   # one f16 step, exactly as written
    _, weights = api.decompress(data)
    for p, w in flatten(weights):   # §9: float32(step) x float32(s); 2^-9 is exact, so w = s / 512
        assert w.dtype == np.float32
        np.testing.assert_array_equal(w, quantized[p].symbols.astype(np.float32) / 512)


def test_a_file_with_only_per_channel_steps_is_still_written_as_version_1(nerv_tiny):
    config, variables = nerv_tiny
    data = api.compress(config, api.quantize_variables(variables, api.QuantPolicy(bits=6)))
    assert data[4] == 1
    one_single = dict(api.quantize_variables(variables, api.QuantPolicy(bits=6)))
    one_single["params/head/conv/kernel"] = quantize_with_steps(np.asarray(
        variables["params"]["head"]["conv"]["kernel"]), np.array([0.01]))
    assert api.compress(config, one_single)[4] == 2   # one tensor of 3 channels on one step is enough


@pytest.mark.parametrize("name", ["cam", "nervpp"])   # the v1 golden files whose headers have every field of today
def test_re_encoding_a_version_1_golden_file_gives_it_back_byte_for_byte_as_version_1(name):
    data = (V1_DIR / f"{name}.nerva").read_bytes()
    config, collections, _ = api.parse(data)
    quantized = {f"{c}/{p}": q for c, (qs, _) in collections.items() for p, q in qs.items()}
    again = api.compress(config, quantized)
    assert again[4] == 1 and again == data


def test_one_step_for_a_one_channel_or_one_dimensional_tensor_is_version_1():
    """Such a tensor has one channel (§9), so one step is what version 1 already stores."""
    abstract = {"params": {"bias": jax.ShapeDtypeStruct((5,), np.float32),
                           "kernel": jax.ShapeDtypeStruct((4, 1), np.float32)}}
    single = QuantizedTensor(np.zeros((4, 1), np.int32), np.ones(1, np.float16), 1)
    assert tensors.version_needed(abstract, {"params/bias": single, "params/kernel": single}) == 1
    wide = {"params/kernel": QuantizedTensor(np.zeros((1, 4), np.int32), np.ones(1, np.float16), 1)}
    abstract["params"]["kernel"] = jax.ShapeDtypeStruct((1, 4), np.float32)
    assert tensors.version_needed(abstract, wide) == 2


def test_the_writer_refuses_a_step_count_that_is_neither_one_nor_the_channel_count():
    abstract = {"kernel": jax.ShapeDtypeStruct((3, 8), np.float32)}
    bad = {"kernel": QuantizedTensor(np.zeros((3, 8), np.int32), np.ones(4, np.float16), 1)}
    with pytest.raises(ValueError, match="4 quantization steps for shape \\(3, 8\\); a tensor has 8"):
        tensors.encode_collection("params", abstract, bad)
    with pytest.raises(ValueError, match="cannot write .nerva format version 4"):
        container.pack(1, [], version=4)


# ---------------------------------------------------------------------------------------------
# Reading: version 1 keeps its rule, version 2 adds a single step, version 3 REC sections (tests/train/
# test_variational.py), version 4 is unknown.


def test_a_hand_made_version_2_file_with_single_steps_decodes_to_its_constant_weights():
    """Written from FORMAT.md alone: tensor 1 (3x3x8x32) has step count 1 and a one-symbol model of 3."""
    data = with_nerv_tensor(1, version=2, steps=f16([2 ** -8]), model=uniform(3, 3))
    assert data[4] == 2
    _, variables = api.decompress(data)
    kernel = variables["params"]["block0"]["up"]["conv"]["kernel"]
    assert kernel.shape == (3, 3, 8, 32) and set(np.unique(kernel)) == {3 * 2 ** -8}
    refused(with_version(data, 1), "tensor params/block0/up/conv/kernel", "invalid quantization side information",
            "1 steps, where a version-1 file allows 32")


def test_the_version_2_golden_file_relabelled_version_1_is_refused_at_its_first_single_step_tensor():
    data, _ = golden_v2()
    refused(with_version(data, 1), "tensor params/block0/up/conv/kernel",
            "1 steps, where a version-1 file allows 32")


@pytest.mark.parametrize("version", [0, 4, 255])
def test_a_version_other_than_1_2_or_3_is_refused_naming_them(version):
    data, _ = golden_v2()
    refused(with_version(data, version), f"unsupported .nerva format version {version}", "reads versions 1, 2 and 3")


def test_a_version_1_file_relabelled_version_2_still_decodes_to_the_same_weights():
    """Version 2 only adds a choice, so every valid v1 body is a valid v2 body."""
    data = (V1_DIR / "nerv.nerva").read_bytes()
    _, collections, _ = api.parse(with_version(data, 2))
    assert symbols_sha256(collections) == json.loads((V1_DIR / "nerv.json").read_text())["symbols_sha256"]


# ---------------------------------------------------------------------------------------------
# RESIDUAL sections carry no steps: they reuse a single-step reference's.


def test_residual_groups_on_a_single_step_reference_round_trip_exactly_as_version_2():
    config = inr.get("nirvana").config_cls.tiny(Geometry.of(12, 32, 48))   # 3 groups of 4 frames
    abstract = api.abstract_variables(config)
    rng = np.random.default_rng(0)
    quantized, prev = {}, None
    for name in sorted(abstract):
        for p, a in flatten(abstract[name]):
            moved = rng.integers(-2, 3, a.shape)
            base = rng.integers(-40, 41, a.shape) if prev is None else prev[p].symbols + moved
            step = np.array([0.004], np.float16) if prev is None else prev[p].steps
            quantized[f"{name}/{p}"] = QuantizedTensor(base.astype(np.int32), step, 8)
        prev = {p[len(name) + 1:]: q for p, q in quantized.items() if p.startswith(name + "/")}
    data = api.compress(config, quantized)
    _, sections = container.unpack(data)
    assert data[4] == 2 and [s.kind for s in sections] == [1, 2, 3, 3]
    _, weights = api.decompress(data)
    step = np.float32(np.float16(0.004))
    for p, w in flatten(weights):
        np.testing.assert_array_equal(w, quantized[p].symbols.astype(np.float32) * step)
    moved = dict(quantized, **{"group001/up/conv/bias": QuantizedTensor(
        quantized["group001/up/conv/bias"].symbols, np.full(64, 0.004, np.float16), 8)})
    with pytest.raises(ValueError, match="needs the reference's quantization steps"):
        api.compress(config, moved)   # per-channel steps under a single-step reference: not expressible


# ---------------------------------------------------------------------------------------------
# The version-2 golden file (tests/data/format_v2, recipe in tests/data/make_golden.py).


def test_the_version_2_golden_file_is_the_one_its_json_describes():
    data, expected = golden_v2()
    assert len(data) == expected["bytes"] and hashlib.sha256(data).hexdigest() == expected["sha256"]
    assert data[4] == expected["format_version"] == 2 and expected["model_id"] == 1


def test_the_version_2_golden_file_decodes_to_the_recorded_config_symbols_and_sums():
    data, expected = golden_v2()
    config, collections, _ = api.parse(data)
    assert config.to_dict() == expected["config"]
    assert symbols_sha256(collections) == expected["symbols_sha256"]
    _, variables = api.decompress(data)
    sums = {f"params/{p}": float(np.sum(x, dtype=np.float64)) for p, x in flatten(variables["params"])}
    assert sums == pytest.approx(expected["dequantized_sums"], rel=1e-6, abs=1e-9)


def test_the_version_2_golden_file_re_encodes_byte_for_byte():
    data, _ = golden_v2()
    config, collections, _ = api.parse(data)
    assert api.compress(config, {f"params/{p}": q for p, q in collections["params"][0].items()}) == data


def test_the_version_2_golden_file_has_single_steps_exactly_on_its_conv_kernels():
    data, _ = golden_v2()
    _, collections, _ = api.parse(data)
    counts = {p: q.steps.size for p, q in collections["params"][0].items()}
    assert counts == {p: 1 if len(s) == 4 else channels(s) for p, s in NERV_TENSORS}


def test_the_version_2_golden_file_quantizes_the_same_weights_as_the_version_1_one():
    """Both quantize NeRV tiny()'s key(0) init at 6 bits: the per-channel tensors are equal, and a
    single-step tensor lies within half of each file's step of the other's (|w - step·s| <= step/2)."""
    (_, v1, _), (_, v2, _) = api.parse((V1_DIR / "nerv.nerva").read_bytes()), api.parse(golden_v2()[0])
    for p, q2 in v2["params"][0].items():
        q1 = v1["params"][0][p]
        if q2.steps.size == q1.steps.size:
            np.testing.assert_array_equal(q2.symbols, q1.symbols)
            assert q2.steps.tobytes() == q1.steps.tobytes()
        else:
            half = (np.float32(q2.steps[0]) + q1.steps.astype(np.float32)) / 2
            assert np.all(np.abs(q2.dequantize() - q1.dequantize()) <= half * (1 + 1e-6))
            assert q2.symbols.max() - q2.symbols.min() <= 2 ** 6 - 1   # 6 bits: 64 levels for the whole tensor


def test_info_shows_the_version_and_each_tensors_step_count_and_side_bytes():
    data, _ = golden_v2()
    lines, collections = cli.describe(data)
    assert "format version 2" in lines[2]
    rows = {line.split()[0]: line.split() for line in cli.tensor_lines(collections)[2:-1]}
    # tensor, shape, bits, steps, model, side B: u8 bits + uvarint count + 2 bytes per f16 step + model
    kernel = rows["params/block0/up/conv/kernel"]
    assert kernel[2:4] == ["6", "1"]
    model_bytes = len(collections["params"][1][1].model.to_bytes())
    assert int(kernel[5]) == 1 + 1 + 2 + model_bytes
    assert rows["params/stem1/dense/kernel"][3] == "768"   # 768 steps: uvarint 80 06, 1536 bytes
    assert int(rows["params/stem1/dense/kernel"][5]) == 1 + 2 + 2 * 768 + len(
        collections["params"][1][9].model.to_bytes())


def test_a_single_step_per_tensor_saves_the_per_channel_steps_bytes(nerv_tiny):
    """NeRV tiny() at 6 bits, each tensor quantized per channel vs as one flattened tensor: the v2 file
    is smaller by at least the 2 bytes of every dropped f16 step, less what the entropy models may lose."""
    config, variables = nerv_tiny
    per_channel = {p: quantize(np.asarray(x), 6) for p, x in flatten(variables)}
    single = {}
    for p, x in flatten(variables):
        q = quantize(np.asarray(x).reshape(-1), 6)
        single[p] = QuantizedTensor(q.symbols.reshape(x.shape), q.steps, q.bits)
    a, b = api.compress(config, per_channel), api.compress(config, single)
    dropped = sum(channels(s) - 1 for _, s in NERV_TENSORS)   # 31 + 31 + 2 + 15 + 767 = 846 steps
    assert (a[4], b[4], dropped) == (1, 2, 846)
    _, ca, _ = api.parse(a)
    _, cb, _ = api.parse(b)
    side = [sum(i.side_bytes for i in c["params"][1]) for c in (ca, cb)]
    model_delta = sum(len(x.model.to_bytes()) - len(y.model.to_bytes())
                      for x, y in zip(ca["params"][1], cb["params"][1]))
    # side bytes: 2 per dropped step, plus the varint of each step count (768 takes 2 bytes, 1 takes 1)
    assert side[0] - side[1] == 2 * dropped + 1 + model_delta
