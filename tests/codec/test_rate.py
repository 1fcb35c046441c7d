"""The differentiable rate model against hand computations, the continuous Laplace, and the file's own table."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from codec import entropy, rate
from codec.entropy import LAPLACE, EntropyModel

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None)
symbol_bits = jax.jit(rate.symbol_bits)   # one compile per input shape for the property tests
bits_in_support = jax.jit(lambda x, p, lo, hi: rate.symbol_bits(x, p, (lo, hi)))


def params(theta: float, p0: float) -> rate.LaplaceParams:
    return rate.LaplaceParams(jnp.float32(math.log(theta / (1 - theta))), jnp.float32(math.log(p0 / (1 - p0))))


def log2_pmf(k: np.ndarray, theta: float, p0: float) -> np.ndarray:
    """log2 of FORMAT.md §7.2's distribution on all integers, in float64:
    p(0) = p0, p(k) = (1 − p0) θ^|k| / (2θ/(1 − θ))."""
    d = np.abs(k).astype(np.float64)
    nonzero = np.log2(1 - p0) + (np.maximum(d, 1) - 1) * np.log2(theta) + np.log2(1 - theta) - 1
    return np.where(d == 0, np.log2(p0), nonzero)


def laplace_like(n: int, scale: float, zero_fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.round(rng.laplace(0.0, scale, n))
    return np.where(rng.random(n) < zero_fraction, 0, x).astype(np.int32)


def encoder_model(x: np.ndarray) -> EntropyModel:
    """The LAPLACE model codec.entropy's encoder fits to x."""
    lo, hi = int(x.min()), int(x.max())
    return entropy._fit_laplace(np.bincount(x - lo, minlength=hi - lo + 1), lo, hi)


def table_bound_bits(x: np.ndarray, model: EntropyModel) -> float:
    """Σ log2(1 + 2/c) over x's table entries c: each entry is within 2 counts of its exact mass × 2^24
    (a floored spike, integer shares with largest remainders; FORMAT.md §7.2 steps 3-5)."""
    counts = model.frequencies()[x.reshape(-1) - model.lo].astype(np.float64)
    return float(np.sum(np.log2(1 + 2 / counts)))


# --- the model itself -------------------------------------------------------------------------


def test_theta_one_half_and_p0_one_half_give_the_hand_computed_masses():
    # Z = 2·½/(1 − ½) = 2, so p(±k) = ½·(½)^k / 2 = 2^-(k+2): 0 costs 1 bit, ±1 3, ±2 4, ±7 9 bits.
    p = rate.from_file(32768, 32768)
    got = rate.symbol_bits(jnp.array([0.0, 1.0, -1.0, 2.0, -2.0, 7.0]), p)
    np.testing.assert_allclose(got, [1, 3, 3, 4, 4, 9], atol=1e-5)
    # x = ½ covers [0, 1]: half the zero cell (θ = ½ keeps it symmetric: ¼) plus the first half of the
    # cell of 1, whose tail is P(Y > y) = ¼·2^-(y − ½): ¼ − ¼·2^-½.
    expected = -math.log2(0.25 + 0.25 * (1 - 2 ** -0.5))
    assert float(rate.symbol_bits(jnp.float32(0.5), p)) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("b", [0.1, 0.3, 1.0, 7.5, 300.0])   # θ = e^(−1/b) ≥ 2^-16
def test_plain_laplace_params_price_real_symbols_as_the_continuous_laplace(b):
    x = np.linspace(-40 * b - 3, 40 * b + 3, 997).astype(np.float32).astype(np.float64)   # x = 0 is on the grid
    cell = scipy.stats.laplace.cdf(x + 0.5, scale=b) - scipy.stats.laplace.cdf(x - 0.5, scale=b)
    cell_sf = scipy.stats.laplace.sf(np.abs(x) - 0.5, scale=b) - scipy.stats.laplace.sf(np.abs(x) + 0.5, scale=b)
    reference = -np.log2(np.where(np.abs(x) > 1, cell_sf, cell))   # sf in the tails: no cancellation
    got = np.asarray(rate.symbol_bits(jnp.asarray(x, jnp.float32), rate.from_scale(b)), np.float64)
    # float32 on terms of up to ~45 nats: a few ulps of 45
    np.testing.assert_allclose(got, reference, rtol=2e-6, atol=2e-5)


@PROPERTY
@given(theta=st.floats(2 ** -16, 1 - 2 ** -16), p0=st.floats(2 ** -16, 1 - 2 ** -16),
       centre=st.integers(-3000, 3000))
def test_integer_symbols_cost_minus_log2_of_the_formats_distribution(theta, p0, centre):
    k = np.arange(centre - 20, centre + 21)
    got = np.asarray(symbol_bits(jnp.asarray(k, jnp.float32), params(theta, p0)), np.float64)
    expected = -log2_pmf(k, theta, p0)
    # float32: ln θ to 2^-24 relative, times |k| ≤ 3020 for the far cells
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@PROPERTY
@given(theta=st.floats(2 ** -16, 1 - 2 ** -10), p0=st.floats(2 ** -16, 1 - 2 ** -16), shift=st.floats(0.0, 1.0))
def test_unit_cells_at_any_offset_tile_the_line_so_their_masses_sum_to_one(theta, p0, shift):
    x = jnp.arange(-20000, 20001, dtype=jnp.float32) + jnp.float32(shift)   # θ^20000 < e^-19: the rest is nil
    mass = np.exp2(-np.asarray(symbol_bits(x, params(theta, p0)), np.float64))
    assert mass.sum() == pytest.approx(1.0, abs=1e-5)


@PROPERTY
@given(n_theta=st.integers(1, 65535), n_p0=st.integers(1, 65535), lo=st.integers(-200, 200),
       width=st.integers(0, 400))
def test_with_its_support_the_estimate_prices_each_symbol_as_the_file_table_does(n_theta, n_p0, lo, width):
    hi = lo + width
    theta, k = n_theta / 65536, np.arange(lo, hi + 1)
    # The table's powers of θ lose < 1/(1 − θ) units of 2^-38 each (FORMAT.md §7.2 step 2); keep to supports
    # where that is below 2^-6 counts, i.e. away from the regime where every power truncates to nothing.
    nonzero_mass = np.sum(np.where(k != 0, theta ** np.abs(k).astype(np.float64), 0.0))
    assume(width == 0 or 2.0 ** 38 * (1 - theta) * nonzero_mass >= 2.0 ** 30)
    table = EntropyModel(LAPLACE, lo, hi, (n_theta, n_p0)).frequencies().astype(np.float64)
    padded = np.full(401, float(lo))   # one compiled shape for every example
    padded[:k.size] = k
    got = np.asarray(bits_in_support(jnp.asarray(padded, jnp.float32), rate.from_file(n_theta, n_p0),
                                     jnp.float32(lo), jnp.float32(hi)), np.float64)[:k.size]
    expected = 24 - np.log2(table)
    np.testing.assert_array_less(np.abs(got - expected), np.log2(1 + 2 / table) + 1e-3)


@PROPERTY
@given(n_theta=st.integers(1, 65535), n_p0=st.integers(1, 65535), lo=st.integers(-100, 100),
       width=st.integers(0, 200))
def test_with_its_support_the_masses_of_the_support_sum_to_one(n_theta, n_p0, lo, width):
    k = np.arange(lo, lo + width + 1)
    padded = np.full(201, float(lo))
    padded[:k.size] = k
    got = bits_in_support(jnp.asarray(padded, jnp.float32), rate.from_file(n_theta, n_p0),
                          jnp.float32(lo), jnp.float32(lo + width))
    assert np.exp2(-np.asarray(got, np.float64)[:k.size]).sum() == pytest.approx(1.0, abs=1e-4)


# --- estimate vs file ---------------------------------------------------------------------------

DISTRIBUTIONS = [(scale, zeros) for scale in (0.5, 1.0, 3.0, 10.0, 100.0, 1000.0) for zeros in (0.0, 0.5, 0.9)]


@pytest.mark.parametrize("n", [1000, 10000])
@pytest.mark.parametrize("scale,zeros", DISTRIBUTIONS)
def test_estimate_at_the_files_own_params_matches_its_ideal_bits(n, scale, zeros):
    x = laplace_like(n, scale, zeros, seed=n)
    model = encoder_model(x)
    p, ideal = rate.from_file(*model.params), entropy.ideal_bits(x, model)
    exact = float(rate.bits(x, p, (int(x.min()), int(x.max()))))
    # with its support: within the table's own rounding (and float32 sums, 16 ulps); measured worst 0.006 %
    assert abs(exact - ideal) <= table_bound_bits(x, model) + 1e-6 * ideal
    assert exact == pytest.approx(ideal, rel=5e-4)


@pytest.mark.parametrize("n", [1000, 10000])
@pytest.mark.parametrize("scale,zeros", DISTRIBUTIONS)
def test_without_support_the_estimate_exceeds_the_file_by_its_truncated_tails_and_floor(n, scale, zeros):
    x = laplace_like(n, scale, zeros, seed=n)
    model = encoder_model(x)
    theta, p0 = model.params[0] / 65536, max(model.params[1], 1) / 65536   # from_file reads n_p0 = 0 as 1
    k = np.arange(model.lo, model.hi + 1)
    log2_kept = np.log2(np.sum(np.exp2(log2_pmf(k[k != 0], theta, p0)))) - np.log2(1 - p0)
    # The file's mass (FORMAT.md §7.2): 2^-24 + (1 − size·2^-24)·p(k), with p renormalised to the support.
    log2_p = log2_pmf(x, theta, p0) - np.where(x != 0, log2_kept, 0.0)
    file_mass = 2.0 ** -24 + (1 - model.size * 2.0 ** -24) * np.exp2(log2_p)
    expected_gap = float(np.sum(np.log2(file_mass) - log2_pmf(x, theta, p0)))
    gap = float(rate.bits(x, rate.from_file(*model.params))) - entropy.ideal_bits(x, model)
    assert abs(gap - expected_gap) <= table_bound_bits(x, model) + 2e-6 * entropy.ideal_bits(x, model)
    if n >= 10000:   # the gap is a few bits per tensor (the tails past the largest |k|): measured ≤ 0.04 %
        assert gap <= 5e-3 * entropy.ideal_bits(x, model)


@pytest.mark.parametrize("scale,zeros", [(1.0, 0.0), (3.0, 0.5), (30.0, 0.9), (1000.0, 0.0)])
def test_estimate_is_within_one_percent_of_the_range_coded_stream(scale, zeros):
    x = laplace_like(20000, scale, zeros, seed=7)
    model = encoder_model(x)
    stream_bits = 8 * len(entropy.encode([(x, model)]))
    estimate = float(rate.bits(x, rate.from_file(*model.params), (int(x.min()), int(x.max()))))
    # The coder spends the ideal bits plus at most two 32-bit words of flush (≤ 34 bits measured).
    assert entropy.ideal_bits(x, model) <= stream_bits <= entropy.ideal_bits(x, model) + 64
    assert estimate == pytest.approx(stream_bits, rel=1e-2)


def test_without_support_a_one_sided_tensor_costs_the_missing_half_and_spike():
    # Symbols 1..: the table keeps only the positive tail and ignores p0, so each symbol's file mass is
    # p(k) · 2 / (1 − p0) of the estimate's: 1 + log2(1/(1 − p0)) bits fewer (minus the far tail's share).
    rng = np.random.default_rng(3)
    x = rng.geometric(0.3, 5000).astype(np.int32)   # P(k) = 0.7^(k−1) · 0.3, k ≥ 1
    theta = 45875 / 65536   # ≈ 0.7
    p = rate.from_file(45875, 16384)   # p0 = ¼
    gap = float(rate.bits(x, p)) - rate.file_bits(x, p)
    kept = 1 - theta ** int(x.max())   # the positive tail's share that lies inside [1, max]
    expected = x.size * (1 + math.log2(1 / 0.75) - math.log2(kept))
    assert gap == pytest.approx(expected, rel=1e-4)


# --- fitting ------------------------------------------------------------------------------------


def nll_bits(x: np.ndarray, theta: float, p0: float) -> float:
    return float(-np.sum(log2_pmf(x, theta, p0)))


@pytest.mark.parametrize("scale,zeros", [(0.7, 0.0), (3.0, 0.6), (40.0, 0.2)])
def test_ml_params_are_the_numerical_minimum_of_the_code_length(scale, zeros):
    x = laplace_like(5000, scale, zeros, seed=11)
    fitted = rate.fit(x)
    theta, p0 = (float(jax.nn.sigmoid(v)) for v in fitted)
    res = scipy.optimize.minimize(lambda v: nll_bits(x, *scipy.special.expit(v)), x0=[0.0, 0.0],
                                  method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-9})
    np.testing.assert_allclose([theta, p0], scipy.special.expit(res.x), rtol=1e-4)


@pytest.mark.parametrize("delta", [0.03, 0.3])
@pytest.mark.parametrize("field", ["theta_logit", "p0_logit"])
def test_perturbing_the_ml_params_either_way_never_lowers_the_estimate(field, delta):
    x = laplace_like(5000, 3.0, 0.5, seed=5)
    fitted = rate.fit(x)
    best = float(rate.bits(x, fitted))
    for sign in (-1, 1):
        moved = fitted._replace(**{field: getattr(fitted, field) + sign * delta})
        assert float(rate.bits(x, moved)) > best


@pytest.mark.parametrize("scale,zeros", DISTRIBUTIONS)
def test_ml_params_in_the_file_cost_within_a_hundredth_of_a_percent_of_the_encoders_own_fit(scale, zeros):
    x = laplace_like(10000, scale, zeros, seed=2)
    assert rate.file_bits(x, rate.fit(x)) <= entropy.ideal_bits(x, encoder_model(x)) * (1 + 1e-4)


def test_ml_params_of_degenerate_tensors_are_clamped_to_the_file_range():
    assert rate.to_file(rate.fit(np.zeros(100, np.int32)))[1] == 65535   # all zeros: p0 → 1 (θ is moot)
    assert rate.to_file(rate.fit(np.array([1, -1, 1, 1]))) == (1, 1)   # no zeros, all |k| = 1: θ → 0, p0 → 0
    assert rate.to_file(rate.fit(np.array([0, 0, 0, 2]))) == (32768, 49152)   # Σ(|k|−1)/n = 1: θ = ½; p0 = ¾


def test_ml_theta_is_differentiable_in_the_symbols_magnitude():
    # logit θ = ln(Σ(|x| − 1) / n) over the n nonzero symbols: d/dx_i = sign(x_i) / Σ(|x| − 1).
    x = jnp.array([0.0, 2.2, -3.1, 4.0, 0.2])
    grad = jax.grad(lambda v: rate.fit(v).theta_logit)(x)
    excess = 2.2 + 3.1 + 4.0 - 3
    np.testing.assert_allclose(grad, [0, 1 / excess, -1 / excess, 1 / excess, 0], rtol=1e-5)


# --- gradients ----------------------------------------------------------------------------------

EXTREME_LOGITS = [-40.0, rate.LOGIT_MIN, 0.0, rate.LOGIT_MAX, 40.0]


@pytest.mark.parametrize("support", [None, (-5000, 3000), (0, 0), (0, 4), (2, 7)])
def test_value_and_gradients_are_finite_at_zero_at_extreme_params_and_far_out(support):
    x = jnp.array([0.0, 1e-7, -0.5, 0.5, 1.0, -1.0, 2.5, 3000.0, -5000.0])
    f = jax.jit(lambda x, p: rate.bits(x, p, support))
    for theta_logit in EXTREME_LOGITS:
        for p0_logit in EXTREME_LOGITS:
            p = rate.LaplaceParams(jnp.float32(theta_logit), jnp.float32(p0_logit))
            value, (gx, gp) = jax.value_and_grad(f, argnums=(0, 1))(x, p)
            assert np.isfinite(value) and np.all(np.isfinite(gx)), (theta_logit, p0_logit)
            assert np.isfinite(gp.theta_logit) and np.isfinite(gp.p0_logit), (theta_logit, p0_logit)


@pytest.mark.parametrize("p", [rate.from_scale(2.0), rate.from_file(60000, 30000), rate.from_file(100, 60000)],
                         ids=["laplace", "wide-spike", "narrow-spike"])
def test_moving_a_symbol_towards_zero_lowers_its_bits(p):
    x = jnp.array([0.3, 0.7, 1.0, 1.5, 4.2, 2000.0])
    for sign in (1.0, -1.0):
        slope = jax.grad(lambda v: rate.bits(v, p))(sign * x)
        assert np.all(sign * np.asarray(slope) > 0)
    assert float(jax.grad(lambda v: rate.bits(v, p))(jnp.float32(0.0))) == 0.0   # the symmetric minimum


def test_a_clamped_parameter_still_gets_the_gradient_that_brings_it_back():
    # θ pushed far past its largest storable value, data that want a small θ: descent must lower it.
    x = laplace_like(1000, 1.0, 0.0, seed=1)
    p = rate.LaplaceParams(jnp.float32(30.0), jnp.float32(0.0))
    assert float(jax.grad(lambda q: rate.bits(x, q))(p).theta_logit) > 0


# --- the file's integers ------------------------------------------------------------------------


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(n_theta=st.integers(1, 65535), n_p0=st.integers(1, 65535))
def test_file_integers_round_trip_through_the_params(n_theta, n_p0):
    assert rate.to_file(rate.from_file(n_theta, n_p0)) == (n_theta, n_p0)


def test_file_integers_are_clamped_as_the_encoder_clamps_them():
    assert rate.to_file(rate.LaplaceParams(jnp.float32(-50.0), jnp.float32(50.0))) == (1, 65535)
    assert rate.to_file(rate.from_file(0, 0)) == (1, 1)   # n_p0 = 0 (no zeros) is read as the smallest spike
    with pytest.raises(ValueError, match="one LAPLACE model per tensor"):
        rate.to_file(rate.LaplaceParams(jnp.zeros(3), jnp.zeros(3)))


def test_file_bits_are_codec_entropys_ideal_bits_of_the_stored_model():
    x = laplace_like(3000, 4.0, 0.3, seed=9)
    p = rate.from_file(50000, 20000)
    assert rate.file_model(x, p) == EntropyModel(LAPLACE, int(x.min()), int(x.max()), (50000, 20000))
    table = rate.file_model(x, p).frequencies()
    assert rate.file_bits(x, p) == pytest.approx(float(np.sum(24 - np.log2(table[x - x.min()]))), rel=1e-12)


def test_estimate_jits_with_traced_support_and_per_row_params():
    x = jnp.asarray(laplace_like(600, 3.0, 0.4, seed=4).reshape(3, 200), jnp.float32)
    rows = rate.LaplaceParams(jnp.array([[0.0], [1.0], [2.0]]), jnp.array([[-1.0], [0.0], [1.0]]))
    f = jax.jit(lambda x, p, lo, hi: rate.bits(x, p, (lo, hi)))
    got = f(x, rows, jnp.min(x), jnp.max(x))
    expected = sum(float(rate.bits(x[i], rate.LaplaceParams(rows.theta_logit[i, 0], rows.p0_logit[i, 0]),
                                   (int(x.min()), int(x.max())))) for i in range(3))
    assert float(got) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("spread", ["uniform", "laplace"])
def test_params_fitted_to_the_support_cost_what_the_encoders_own_laplace_fit_costs(spread):
    # nearly uniform 6-bit symbols (what a short fit leaves) are where the untruncated ML θ is furthest off
    rng = np.random.default_rng(4)
    k = (rng.integers(-26, 27, 8000) if spread == "uniform" else np.rint(rng.laplace(0, 6, 8000))).astype(np.int64)
    support = (int(k.min()), int(k.max()))
    encoder = entropy.fit_model(k, (entropy.LAPLACE,))          # the encoder's integer ternary search
    want = entropy.ideal_bits(k, encoder)
    fitted = float(rate.bits(jnp.asarray(k, jnp.float32), rate.fit_to_support(k, support), support))
    untruncated = float(rate.bits(jnp.asarray(k, jnp.float32), rate.fit(k), support))
    assert fitted == pytest.approx(want, rel=2e-3)
    assert fitted <= untruncated + 1e-3 * want


def test_segments_priced_at_once_cost_what_each_tensor_costs_under_the_encoders_own_laplace_table():
    # three tensors of different spread, sign and size laid end to end; each must cost its own file table
    rng = np.random.default_rng(5)
    parts = [np.rint(rng.laplace(0, 4, 3000)), rng.integers(1, 9, 700), np.rint(rng.laplace(0, 30, 1500)), [0, 0, 0]]
    parts = [np.asarray(p, np.int64) for p in parts]
    segments = rate.Segments(tuple(p.size for p in parts))
    flat = jnp.asarray(np.concatenate(parts), jnp.float32)
    support = rate.segment_support(flat, segments)
    np.testing.assert_array_equal(np.stack(support, 1), [[p.min(), p.max()] for p in parts])
    got = np.asarray(jax.jit(lambda x: rate.segment_symbol_bits(
        x, segments, rate.segment_fit_to_support(x, segments, support), support))(flat), np.float64)
    first = np.cumsum([0] + [p.size for p in parts])
    for i, k in enumerate(parts):
        want = entropy.ideal_bits(k, entropy.fit_model(k, (entropy.LAPLACE,)))   # the encoder's integer fit
        assert got[first[i]:first[i + 1]].sum() == pytest.approx(want, rel=2e-3, abs=1e-3)


@pytest.mark.parametrize("count", [3, rate.SLICED_SEGMENTS + 16])   # by slices, and by scatters
def test_segment_sums_and_maxima_are_each_tensors_own_with_few_or_many_segments(count):
    rng = np.random.default_rng(count)
    parts = [np.rint(rng.laplace(rng.normal() * 3, rng.uniform(0.5, 20), rng.integers(1, 900))) for _ in range(count)]
    segments = rate.Segments(tuple(p.size for p in parts))
    flat = jnp.asarray(np.concatenate(parts), jnp.float32)
    stacked = jnp.stack([flat, -flat])
    np.testing.assert_array_equal(jax.jit(segments.sum)(stacked), [[p.sum() for p in parts], [-p.sum() for p in parts]])
    np.testing.assert_array_equal(jax.jit(segments.max)(stacked), [[p.max() for p in parts], [(-p).max() for p in parts]])
    assert jax.jit(segments.sum)(flat).shape == (count,)


def test_many_segments_by_scatters_price_exactly_as_by_slices(monkeypatch):
    rng = np.random.default_rng(9)
    parts = [np.rint(rng.laplace(0, rng.uniform(0.5, 20), rng.integers(1, 900))) for _ in range(40)]
    segments = rate.Segments(tuple(p.size for p in parts))
    flat = jnp.asarray(np.concatenate(parts), jnp.float32) + 0.3

    def bits(x):
        k = jnp.round(x)
        support = rate.segment_support(k, segments)
        return jnp.sum(rate.segment_symbol_bits(x, segments, rate.segment_fit_to_support(k, segments, support), support))
    scattered = jax.value_and_grad(bits)(flat)   # 40 > SLICED_SEGMENTS
    monkeypatch.setattr(rate, "SLICED_SEGMENTS", 1000)
    sliced = jax.value_and_grad(bits)(flat)
    assert float(scattered[0]) == float(sliced[0])
    np.testing.assert_array_equal(scattered[1], sliced[1])
