"""Entropy models and the range-coded stream: exact round trips, code lengths against the ideal, model bytes."""

import hashlib
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest

from codec import entropy
from codec.bytesio import ByteReader, FormatError
from codec.entropy import HISTOGRAM, LAPLACE, UNIFORM, EntropyModel

REPO = pathlib.Path(__file__).resolve().parents[2]


def laplace_ints(rng, n, scale=3.0, bound=127):
    return np.clip(np.round(rng.laplace(0.0, scale, n)), -bound, bound).astype(np.int32)


def sparse_ints(rng, n, zero_fraction=0.8):
    return np.where(rng.random(n) < zero_fraction, 0, laplace_ints(rng, n)).astype(np.int32)


def bimodal_ints(rng, n):
    return np.round(np.concatenate([rng.normal(-40, 2, n // 2), rng.normal(40, 2, n - n // 2)])).astype(np.int32)


def example_arrays():
    rng = np.random.default_rng(0)
    return {
        "laplace": laplace_ints(rng, 20_000),
        "sparse": sparse_ints(rng, 20_000).reshape(100, 200),
        "uniform": rng.integers(-8, 8, 5_000),
        "constant": np.full((7, 3), 5),
        "empty": np.zeros((0, 4), np.int32),
        "single": np.array([-3]),
        "wide": rng.integers(-32767, 32768, 10_000),
        "bimodal": bimodal_ints(rng, 20_000),
    }


def example_models():
    return [
        EntropyModel(UNIFORM, 0, 0, ()),
        EntropyModel(UNIFORM, -5, 10, ()),
        EntropyModel(LAPLACE, -127, 127, (50_000, 30_000)),
        EntropyModel(LAPLACE, 3, 40, (60_000, 0)),  # zero outside the support
        EntropyModel(LAPLACE, -40000, 40000, (65535, 1)),
        EntropyModel(HISTOGRAM, -2, 6, (4, 3, 0, 0, 0, 9, 0, 1, 3, 0)),
        EntropyModel(HISTOGRAM, 100, 100, (0, 1)),
    ]


def test_decode_of_encode_is_identity():
    arrays = example_arrays()
    pairs = [(x, entropy.fit_model(x)) for x in arrays.values()]
    data = entropy.encode(pairs)
    decoded = entropy.decode(data, [(x.size, m) for x, m in pairs])
    for (name, x), y in zip(arrays.items(), decoded):
        assert y.dtype == np.int32 and y.shape == (x.size,), name
        np.testing.assert_array_equal(y, x.reshape(-1), err_msg=name)


def test_decode_of_encode_is_identity_with_given_models():
    rng = np.random.default_rng(1)
    pairs = []
    for model in example_models():
        table = model.frequencies()
        support = np.flatnonzero(table) + model.lo
        pairs.append((rng.choice(support, size=3_000, p=table[table > 0] / table.sum()), model))
    decoded = entropy.decode(entropy.encode(pairs), [(x.size, m) for x, m in pairs])
    for (x, _), y in zip(pairs, decoded):
        np.testing.assert_array_equal(y, x)


def test_payload_within_one_percent_of_ideal_bits():
    rng = np.random.default_rng(2)
    arrays = [laplace_ints(rng, 300_000), sparse_ints(rng, 300_000), bimodal_ints(rng, 100_000),
              rng.integers(-1000, 1000, 50_000), np.zeros(1000, np.int32)]
    pairs = [(x, entropy.fit_model(x)) for x in arrays]
    ideal = sum(entropy.ideal_bits(x, m) for x, m in pairs)
    payload_bits = 8 * len(entropy.encode(pairs))
    assert ideal - 1 <= payload_bits <= 1.01 * ideal + 64


def test_coder_codes_with_exactly_the_model_table():
    # Far-tail symbols have frequency 1 of 2**24, i.e. exactly 24 bits each. Any rounding of the
    # table on the way into constriction (it leaks mass to every symbol) would move this cost.
    model = EntropyModel(LAPLACE, -1000, 1000, (30_000, 30_000))
    table = model.frequencies()
    tail = np.flatnonzero(table == 1) + model.lo
    x = np.random.default_rng(3).choice(tail, size=2_000)
    assert entropy.ideal_bits(x, model) == 24 * x.size
    assert 24 * x.size <= 8 * len(entropy.encode([(x, model)])) <= 24 * x.size + 64


def test_model_bytes_round_trip():
    rng = np.random.default_rng(4)
    fitted = [entropy.fit_model(x) for x in example_arrays().values()]
    fitted.append(entropy._fit_histogram(np.bincount(rng.integers(0, 50, 999)), -10, 39))
    assert {m.kind for m in fitted + example_models()} == {UNIFORM, LAPLACE, HISTOGRAM}
    for model in fitted + example_models():
        reader = ByteReader(model.to_bytes() + b"tail")
        assert EntropyModel.from_reader(reader) == model
        assert reader.raw(4) == b"tail"


def test_model_bytes_match_the_documented_layout():
    assert EntropyModel(UNIFORM, -3, 5, ()).to_bytes() == bytes([0, 5, 10])
    assert EntropyModel(LAPLACE, -3, 5, (40000, 1234)).to_bytes() == bytes([1, 5, 10]) + struct.pack("<HH", 40000, 1234)
    # HISTOGRAM: kind, lo, hi, p, then frequencies with zero runs as (0, run - 1).
    histogram = EntropyModel(HISTOGRAM, 0, 5, (3, 2, 0, 0, 5, 1, 0))
    assert histogram.to_bytes() == bytes([2, 0, 10, 3, 2, 0, 1, 5, 1, 0, 0])


def test_histogram_table_size_matches_its_bytes():
    rng = np.random.default_rng(5)
    for _ in range(20):
        table = rng.integers(0, 3, 300) * rng.integers(1, 20000, 300)
        table[-1] = (1 << 24) - table[:-1].sum()
        model = EntropyModel(HISTOGRAM, 0, 299, (24, *table.tolist()))
        header = len(EntropyModel(UNIFORM, 0, 299, ()).to_bytes()) + 1  # + the precision byte
        assert len(model.to_bytes()) == header + entropy._histogram_table_size(table)


@pytest.mark.parametrize("damage", [
    lambda b: b[:-1],                      # truncated inside the table
    lambda b: bytes([7]) + b[1:],          # unknown kind
    lambda b: b[:1] + bytes([10, 5]) + b[3:],  # hi < lo
    lambda b: b[:3] + bytes([4]) + b[4:],  # frequencies no longer sum to 2**p
    lambda b: b[:4] + bytes([2, 0, 9]),    # zero run past the end of the support
])
def test_malformed_model_bytes_raise_format_error(damage):
    data = EntropyModel(HISTOGRAM, 0, 5, (3, 2, 0, 0, 5, 1, 0)).to_bytes()
    with pytest.raises(FormatError):
        EntropyModel.from_reader(ByteReader(damage(data)))


def test_fit_picks_cheapest_model():
    rng = np.random.default_rng(6)
    tiny = laplace_ints(rng, 40)
    big = bimodal_ints(rng, 200_000)
    assert entropy.fit_model(tiny).kind in (UNIFORM, LAPLACE)
    assert entropy.fit_model(big).kind == HISTOGRAM
    for x in (tiny, big, sparse_ints(rng, 5_000)):
        counts = np.bincount(x - x.min())
        lo, hi = int(x.min()), int(x.max())
        candidates = [EntropyModel(UNIFORM, lo, hi, ()), entropy._fit_laplace(counts, lo, hi),
                      entropy._fit_histogram(counts, lo, hi)]
        cost = [8 * len(m.to_bytes()) + entropy.ideal_bits(x, m) for m in candidates]
        chosen = entropy.fit_model(x)
        assert 8 * len(chosen.to_bytes()) + entropy.ideal_bits(x, chosen) == min(cost)


def test_parametric_tables_cover_the_support_with_a_power_of_two_total():
    for model in example_models():
        table = model.frequencies()
        assert table.dtype == np.int64 and table.shape == (model.size,)
        total = int(table.sum())
        assert total & (total - 1) == 0 and total <= 1 << entropy.PRECISION
        if model.kind != HISTOGRAM:
            assert table.min() >= 1


def table_digests(models):
    return [hashlib.sha256(m.frequencies().astype("<i8").tobytes()).hexdigest() for m in models]


def test_frequencies_are_deterministic_across_processes():
    models = example_models() + [EntropyModel(LAPLACE, -255, 255, (n, n // 2)) for n in (1, 777, 40000, 65535)]
    code = ("import hashlib; from codec.entropy import EntropyModel\n"
            f"models = [EntropyModel(k, lo, hi, p) for k, lo, hi, p in {[(m.kind, m.lo, m.hi, m.params) for m in models]!r}]\n"
            "print(' '.join(hashlib.sha256(m.frequencies().astype('<i8').tobytes()).hexdigest() for m in models))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.split() == table_digests(models)


def test_sparse_arrays_code_below_dense():
    rng = np.random.default_rng(7)
    dense = laplace_ints(rng, 100_000)
    sparse = np.where(rng.random(dense.size) < 0.8, 0, dense)
    dense_bytes = len(entropy.encode([(dense, entropy.fit_model(dense))]))
    sparse_bytes = len(entropy.encode([(sparse, entropy.fit_model(sparse))]))
    assert sparse_bytes < 0.45 * dense_bytes


def test_constant_array_costs_no_payload():
    for value in (0, -17, 32767):
        x = np.full(10_000, value)
        model = entropy.fit_model(x)
        assert (model.lo, model.hi) == (value, value)
        assert entropy.ideal_bits(x, model) == 0
        assert entropy.encode([(x, model)]) == b""
        np.testing.assert_array_equal(entropy.decode(b"", [(x.size, model)])[0], x)
    assert len(entropy.fit_model(np.zeros(10_000, np.int8)).to_bytes()) == 3  # kind, lo, hi


def test_symbols_outside_support_raise():
    model = EntropyModel(LAPLACE, -4, 4, (40000, 20000))
    with pytest.raises(ValueError):
        entropy.encode([(np.array([0, 5]), model)])
    with pytest.raises(ValueError):
        entropy.encode([(np.array([-5]), model)])
    zero_frequency = EntropyModel(HISTOGRAM, 0, 2, (2, 2, 0, 2))
    with pytest.raises(ValueError):
        entropy.encode([(np.array([0, 1]), zero_frequency)])
    assert entropy.ideal_bits(np.array([1]), zero_frequency) == float("inf")


def test_truncated_stream_raises_or_differs():
    rng = np.random.default_rng(8)
    x = laplace_ints(rng, 20_000)
    model = entropy.fit_model(x)
    data = entropy.encode([(x, model)])
    with pytest.raises(FormatError):
        entropy.decode(data[:-1], [(x.size, model)])
    damaged = [data[:-4], data[:len(data) // 8 * 4], b"", rng.bytes(len(data)),
               bytes([data[0] ^ 1]) + data[1:], data[:8] + bytes(len(data) - 8)]
    for bad in damaged:
        try:
            (y,) = entropy.decode(bad, [(x.size, model)])
        except FormatError:
            continue
        assert not np.array_equal(y, x)


def test_fit_rejects_non_integer_and_too_wide_input():
    with pytest.raises(ValueError):
        entropy.fit_model(np.array([0.5, 1.0]))
    with pytest.raises(ValueError):
        entropy.fit_model(np.array([0, entropy.MAX_SUPPORT]))
