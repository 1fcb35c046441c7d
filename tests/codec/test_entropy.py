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
    with pytest.raises(entropy.SupportTooWide):   # a ValueError
        entropy.fit_model(np.array([0, entropy.MAX_SUPPORT]))


# The reader's bounds on tables and streams (FORMAT.md §7.4, §8.3).


def test_no_laplace_table_computes_more_than_2_to_the_20_powers_of_theta():
    """theta = 65535/65536 decays slowest; its truncated powers reach 0 after 1,037,195 products."""
    power, steps = 1 << 38, 0
    while power:
        power = (power * 65535) >> 16
        steps += 1
    assert steps == 1_037_195 <= entropy.LAPLACE_MAX_POWERS == 1 << 20   # the last product is the 0
    assert entropy.table_cost(LAPLACE, 1 << 30, 1 << 30) == 1 + (1 << 20)
    assert entropy.table_cost(LAPLACE, -3, 5) == 9 + 5
    assert entropy.table_cost(UNIFORM, 1 << 30, (1 << 30) + 9) == 10


def test_the_table_budget_refuses_the_first_model_past_it():
    budget = entropy.TableBudget(1000)
    assert budget.limit == (1 << 20) + 64 * 1000
    budget.take(budget.limit - 5)
    budget.take(5)
    with pytest.raises(FormatError, match="more than the 1112576 table entries"):
        budget.take(1)
    assert entropy.TableBudget(10 ** 9).limit == 1 << 25


def test_the_table_caches_keep_no_large_table():
    wide = EntropyModel(UNIFORM, 0, (1 << 20) - 1, ())
    for cached in (entropy._frequency_table, entropy._coding_table):
        cached.cache_clear()
        cached(wide)
        cached(EntropyModel(UNIFORM, 0, 4095, ()))
        assert cached.cache_info().currsize == 1   # only the small one


@pytest.mark.parametrize("model", example_models(), ids=lambda m: f"{entropy.KIND_NAMES[m.kind]}[{m.lo},{m.hi}]")
def test_min_bits_per_symbol_is_the_cost_of_the_most_frequent_symbol(model):
    table = model.frequencies()
    total = int(table.sum())
    assert entropy.min_bits_per_symbol(model) == pytest.approx(np.log2(total / table.max()), abs=1e-12)
    assert entropy.codes_nothing(model) == (np.count_nonzero(table) == 1)


def models_that_code(x: np.ndarray) -> list[EntropyModel]:
    """The fitted model of x and every example model in whose support x has no zero-frequency symbol."""
    x = x.ravel().astype(np.int64)
    fits = [m for m in example_models() if x.size and m.lo <= x.min() and x.max() <= m.hi
            and np.all(m.frequencies()[x - m.lo] > 0)]
    return [entropy.fit_model(x), *fits]


def test_every_encoded_stream_is_longer_than_its_symbols_least_bits():
    """FORMAT.md §8.3: a valid stream of W words holds fewer than 32·W bits, so the reader's bound
    (with 2 words of slack) never refuses one; checked on encoder output of every example."""
    rng = np.random.default_rng(1)
    arrays = {**example_arrays(), "one bit": rng.integers(0, 2, 999), "skewed": sparse_ints(rng, 5000, 0.999)}
    for name, x in arrays.items():
        for model in models_that_code(x):
            words = len(entropy.encode([(x, model)])) // 4
            info = entropy.ideal_bits(x, model)
            assert x.size * entropy.min_bits_per_symbol(model) <= info + 1e-6
            assert info < 32 * words or info == words == 0, (name, model, info, words)


def test_a_stream_too_short_for_its_symbols_is_refused_before_decoding():
    model = EntropyModel(UNIFORM, 0, 255, ())   # 8 bits per symbol exactly
    with pytest.raises(FormatError, match="payload of 2 words is too short for its symbols"):
        entropy.decode(bytes(8), [(16 + 1, model)])   # 136 bits > 32·(2 + 2)
    assert len(entropy.decode(bytes(8), [(16, model)])[0]) == 16   # 128 bits: within the slack


def test_a_tensor_that_codes_nothing_decodes_to_a_read_only_broadcast():
    (out,) = entropy.decode(b"", [(10 ** 7, EntropyModel(UNIFORM, 7, 7, ()))])
    assert out.shape == (10 ** 7,) and out.strides == (0,) and not out.flags.writeable and out[123] == 7
