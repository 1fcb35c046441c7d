"""Soft rounding, Kumaraswamy noise, straight-through rounding and their annealing, against closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from train import quantsim
from train.quantsim import Anneal

soft_round = jax.jit(quantsim.soft_round)
soft_round_inverse = jax.jit(quantsim.soft_round_inverse)
noisy_soft_round = jax.jit(quantsim.noisy_soft_round)
kumaraswamy_noise = jax.jit(quantsim.kumaraswamy_noise, static_argnums=1)
kumaraswamy_icdf = jax.jit(quantsim.kumaraswamy_icdf)
GRID = np.linspace(-4.0, 4.0, 8001, dtype=np.float32)   # steps of 1e-3: hits integers and half-integers
ULP = 2.0 ** -21   # float32 spacing for |x| < 4


def offset(x: np.ndarray) -> np.ndarray:
    """r = x − ⌊x⌋ − ½ ∈ [−½, ½)."""
    return x - np.floor(x) - 0.5


def slope(x: np.ndarray, t: float) -> np.ndarray:
    """ds_T/dx = sech²(r/T) / (2T·tanh(1/(2T))), by hand from the definition."""
    return 1 / np.cosh(offset(x) / t) ** 2 / (2 * t * np.tanh(0.5 / t))


# --- soft rounding ------------------------------------------------------------------------------


def test_soft_round_has_the_hand_computed_values():
    # T = ½, x = 0.25: ⌊x⌋ + ½ = 0.5, r = −0.25: 0.5 − tanh(0.5)/(2 tanh(1)) = 0.5 − 0.46211716/1.52318831
    assert float(soft_round(0.25, 0.5)) == pytest.approx(0.5 - 0.46211716 / 1.52318831, abs=1e-6)
    # T = 0.3, x = 1.9: 1.5 + tanh(4/3) / (2 tanh(5/3)) = 1.5 + 0.87006166 / 1.86221922
    assert float(soft_round(1.9, 0.3)) == pytest.approx(1.5 + 0.87006166 / 1.86221922, abs=1e-6)
    # T = 0.1, x = −0.7: −1 + ½ + tanh(−2) / (2 tanh(5)) = −0.5 − 0.96402758 / 1.99981841
    assert float(soft_round(-0.7, 0.1)) == pytest.approx(-0.5 - 0.96402758 / 1.99981841, abs=1e-6)


@pytest.mark.parametrize("t", [0.001, 0.05, 0.2])
def test_soft_round_at_small_temperature_is_rounding_away_from_half_integers(t):
    x = GRID[np.abs(offset(GRID)) >= 0.05]   # at least 0.05 from every half-integer
    e = np.abs(x - np.round(x))   # distance to the nearest integer
    # ½·(1 − tanh((½ − e)/T)/tanh(1/(2T))) ≤ ½·(1 − tanh((½ − e)/T)) ≤ e^(−(1 − 2e)/T)
    bound = np.exp(-(1 - 2 * e) / t)
    assert np.all(np.abs(np.asarray(soft_round(x, t)) - np.round(x)) <= bound + ULP)
    if t == 0.001:
        np.testing.assert_array_equal(np.asarray(soft_round(x, t)), np.round(x))


@pytest.mark.parametrize("t", [10.0, 30.0])
def test_soft_round_at_large_temperature_is_the_identity_to_second_order(t):
    # tanh(u) = u − u³/3 + ...: s_T(x) − x = r·(1/12 − r²/3)/T² + O(T^-4), at most 0.0161/T² at r = 1/√12
    r = offset(GRID.astype(np.float64))
    deviation = np.asarray(soft_round(GRID, t), np.float64) - GRID
    np.testing.assert_allclose(deviation, r * (1 / 12 - r ** 2 / 3) / t ** 2, atol=4 * ULP)
    assert np.abs(deviation).max() <= 0.01604 / t ** 2 + 4 * ULP


@pytest.mark.parametrize("t", [0.05, 0.3, 1.0, 5.0])
def test_soft_round_is_monotone_and_fixes_integers_and_half_integers(t):
    s = np.asarray(soft_round(GRID, t))
    assert np.all(np.diff(s) >= -ULP)   # non-decreasing up to float32 rounding where ⌊x⌋ jumps
    if t >= 0.3:   # slope ≥ sech²(1/(2T))/(2T·tanh(1/(2T))) ≥ 0.2: every 1e-3 step shows
        assert np.all(np.diff(s) > 0)
    k = np.arange(-4, 5, dtype=np.float32)
    np.testing.assert_allclose(np.asarray(soft_round(k, t)), k, atol=ULP)
    np.testing.assert_allclose(np.asarray(soft_round(k + 0.5, t)), k + 0.5, atol=ULP)
    # continuous where ⌊x⌋ jumps: just below and above an integer, both sides land next to it
    for side in (-1e-3, 1e-3):
        assert np.all(np.abs(np.asarray(soft_round(k + side, t)) - k) <= 1e-3 * slope(k + side, t) + ULP)


@pytest.mark.parametrize("t", [0.1, 0.3, 1.0, 10.0])
def test_soft_round_inverse_undoes_soft_round_as_far_as_float32_resolves_it(t):
    # s is stored to half a ulp; the inverse stretches that by 1/s'(x) (huge next to integers at small T)
    back = np.asarray(soft_round_inverse(soft_round(GRID, t), t))
    assert np.all(np.abs(back - GRID) <= 4 * ULP / slope(GRID, t) + ULP)


@pytest.mark.parametrize("t", [0.05, 0.005])
def test_conditional_mean_tends_to_rounding_linearly_in_temperature(t):
    # y = k + δ: s_T⁻¹(y − ½) + ½ = k + T·artanh(2δ·tanh(1/(2T))), within T·artanh(2|δ|) of k
    y = GRID[np.abs(offset(GRID + 0.5)) <= 0.45]   # |δ| ≤ 0.45: away from the boundaries k + ½
    delta = np.abs(y - np.round(y)).astype(np.float64)
    error = np.abs(np.asarray(quantsim.soft_round_conditional_mean(y, t)) - np.round(y))
    assert np.all(error <= t * np.arctanh(2 * delta) + ULP)


def test_conditional_mean_tends_to_the_identity_at_large_temperature():
    np.testing.assert_allclose(np.asarray(quantsim.soft_round_conditional_mean(GRID, 50.0)), GRID,
                               atol=0.0161 / 50 ** 2 + 4 * ULP)


# --- Kumaraswamy noise --------------------------------------------------------------------------


def kumaraswamy_moment(n: int, a: float) -> float:
    """E[U^n] = b·B(1 + n/a, b) for U ~ Kumaraswamy(a, b) on (0, 1)."""
    b = (2 ** a * (a - 1) + 1) / a
    return b * scipy.special.beta(1 + n / a, b)


N = 200_000


def test_kumaraswamy_noise_with_a_one_is_uniform_on_the_open_half_interval():
    u = np.asarray(kumaraswamy_noise(jax.random.key(0), (N,), 1.0), np.float64)
    assert -0.5 < u.min() and u.max() < 0.5
    # Kolmogorov-Smirnov: D < 1.63/√n is the 1 % critical value (a fixed key: the draw is reproducible)
    assert scipy.stats.kstest(u, scipy.stats.uniform(loc=-0.5, scale=1).cdf).statistic < 1.63 / math.sqrt(N)


@pytest.mark.parametrize("a", [1.0, 1.5, 2.0, 3.0])
def test_kumaraswamy_noise_has_the_closed_form_mean_spread_and_range(a):
    u = np.asarray(kumaraswamy_noise(jax.random.key(1), (N,), a), np.float64)
    m1, m2 = kumaraswamy_moment(1, a), kumaraswamy_moment(2, a)
    sd = math.sqrt(m2 - m1 ** 2)
    assert u.mean() == pytest.approx(m1 - 0.5, abs=4 * sd / math.sqrt(N))   # 4 standard errors
    # se(sd)/sd = √((κ − 1)/(4n)) for kurtosis κ, and κ ≤ 3 here (bounded, single-peaked)
    assert u.std() == pytest.approx(sd, rel=4 * math.sqrt(0.5 / N))
    assert -0.5 < u.min() and u.max() < 0.5


def test_kumaraswamy_noise_with_a_two_peaks_at_zero():
    u = np.asarray(kumaraswamy_noise(jax.random.key(2), (N,), 2.0))
    counts, _ = np.histogram(u, bins=20, range=(-0.5, 0.5))
    assert np.argmax(counts) in (9, 10)   # one of the two bins that touch 0
    # b(2) = 5/2, F(u) = 1 − (1 − u²)^(5/2): the bin [0, 0.05) of the noise holds F(0.55) − F(0.5)
    p = (1 - 0.25) ** 2.5 - (1 - 0.55 ** 2) ** 2.5
    assert counts[10] == pytest.approx(N * p, abs=4 * math.sqrt(N * p * (1 - p)))


@pytest.mark.parametrize("a", [1.0, 1.3, 2.0, 4.0])
def test_kumaraswamy_icdf_inverts_the_closed_form_cdf_and_stays_inside_at_the_ends(a):
    b = (2 ** a * (a - 1) + 1) / a
    v = np.linspace(0.001, 0.999, 999)
    u = np.asarray(kumaraswamy_icdf(v, a), np.float64) + 0.5
    np.testing.assert_allclose(1 - (1 - u ** a) ** b, v, atol=2e-6)   # F(u) = 1 − (1 − u^a)^b
    ends = np.asarray(kumaraswamy_icdf(np.array([0.0, 1 - 2 ** -24], np.float32), a))
    assert -0.5 < ends[0] and ends[1] < 0.5


def test_kumaraswamy_b_puts_the_mode_at_one_half():
    for a in (1.1, 1.5, 2.0, 3.0):
        b = float(quantsim.kumaraswamy_b(a))
        assert ((a - 1) / (a * b - 1)) ** (1 / a) == pytest.approx(0.5, rel=1e-6)
    assert float(quantsim.kumaraswamy_b(1.0)) == 1.0   # a = b = 1: uniform


# --- the training quantizer and straight-through rounding ---------------------------------------


@pytest.mark.parametrize("t", [0.05, 0.005])
def test_noisy_soft_round_tends_to_rounding_at_small_temperature_whatever_the_noise(t):
    # s_T(x) = k + ε with |ε| ≤ e^(−(1 − 2e)/T) (e = |x − k|), then k + ε + u comes back to within
    # T·artanh(2|ε + u|) of k
    x = GRID[np.abs(offset(GRID)) >= 0.25]   # e ≤ ¼
    eps = np.exp(-(1 - 2 * np.abs(x - np.round(x))) / t)
    for seed in range(3):
        u = np.abs(np.asarray(kumaraswamy_noise(jax.random.key(seed), x.shape, 2.0), np.float64))
        error = np.abs(np.asarray(noisy_soft_round(x, jax.random.key(seed), t, 2.0)) - np.round(x))
        assert np.all(error <= t * np.arctanh(np.minimum(2 * (u + eps), 1 - 1e-9)) + 4 * ULP)
        assert np.median(error) <= 2 * t   # the typical noise, |u| ≲ 0.4, comes back within ~1.1·T


def test_noisy_soft_round_is_additive_noise_at_large_temperature():
    key = jax.random.key(3)
    got = np.asarray(noisy_soft_round(jnp.asarray(GRID), key, 50.0, 1.5))
    noise = np.asarray(kumaraswamy_noise(key, GRID.shape, 1.5))
    np.testing.assert_allclose(got, GRID + noise, atol=2 * 0.0161 / 50 ** 2 + 8 * ULP)


@pytest.mark.parametrize("t", [0.01, 0.1, 0.5])
def test_noisy_soft_round_has_finite_gradients_at_integers_and_half_integers(t):
    x = jnp.asarray(np.concatenate([np.arange(-3, 4), np.arange(-3, 3) + 0.5, GRID[::97]]).astype(np.float32))
    grads = jax.jit(jax.vmap(jax.grad(lambda v: quantsim.noisy_soft_round(v, jax.random.key(4), t, 2.0))))(x)
    assert np.all(np.isfinite(np.asarray(grads))) and np.all(np.asarray(grads) >= 0)


def test_round_ste_forward_is_exact_rounding_with_halves_to_even():
    x = jnp.asarray(np.concatenate([GRID, np.float32([0.5, 1.5, 2.5, -0.5, -2.5, 1e6 + 0.5])]))
    for t in (None, 0.3):
        np.testing.assert_array_equal(np.asarray(jax.jit(quantsim.round_ste)(x, t)),
                                      np.rint(np.asarray(x)))


def test_round_ste_gradient_is_one_or_soft_rounds_slope():
    x = GRID[::7]
    identity = jax.jit(jax.vmap(jax.grad(lambda v: quantsim.round_ste(v))))(x)
    np.testing.assert_array_equal(np.asarray(identity), np.ones_like(x))
    soft = jax.jit(jax.vmap(jax.grad(lambda v: quantsim.round_ste(v, 0.3))))(x)
    np.testing.assert_allclose(np.asarray(soft), slope(x.astype(np.float64), 0.3), rtol=1e-5, atol=1e-6)


# --- annealing ----------------------------------------------------------------------------------


def test_anneal_defaults_run_from_the_published_starts_to_the_published_ends():
    at = jax.jit(Anneal().at)
    assert [float(v) for v in at(0.0)] == pytest.approx([0.5, 2.0])
    assert [float(v) for v in at(1.0)] == pytest.approx([0.3, 1.0])
    assert [float(v) for v in at(0.25)] == pytest.approx([0.45, 1.75])
    assert [float(v) for v in jax.jit(Anneal(temperature=(0.3, 0.1)).at)(1.0)] == pytest.approx([0.1, 1.0])


def test_anneal_is_monotone_and_clipped_outside_zero_to_one():
    progress = jnp.linspace(-0.5, 1.5, 201)
    temperature, a = jax.jit(jax.vmap(Anneal().at))(progress)
    assert np.all(np.diff(np.asarray(temperature)) <= 0) and np.all(np.diff(np.asarray(a)) <= 0)
    assert float(temperature[0]) == pytest.approx(0.5) and float(temperature[-1]) == pytest.approx(0.3)
    assert float(a[0]) == pytest.approx(2.0) and float(a[-1]) == pytest.approx(1.0)


def test_anneal_refuses_temperatures_and_a_that_have_no_meaning():
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        Anneal(temperature=(0.5, 0.0))
    with pytest.raises(ValueError, match="a must be >= 1"):
        Anneal(kumaraswamy_a=(2.0, 0.5))


def test_one_jitted_training_step_takes_traced_progress_temperature_and_a():
    schedule, traces = Anneal(), [0]

    @jax.jit
    def step(x, key, progress):
        traces[0] += 1   # runs at trace time only
        t, a = schedule.at(progress)
        return jnp.sum(noisy_soft_round(x, key, t, a) ** 2)

    x = jnp.asarray(GRID[::10])
    values = [float(step(x, jax.random.key(5), p)) for p in (0.0, 0.5, 1.0)]
    assert traces == [1] and all(np.isfinite(values))
