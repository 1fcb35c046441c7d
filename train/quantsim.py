"""Quantization simulated in training: soft rounding, Kumaraswamy noise, straight-through rounding, annealing.

All in unit-step coordinates (divide by the quantization step first). The training-time quantizer is
Agustsson & Theis (2020, "Universally quantized neural compression", §4.1) as C3 uses it: soft-round,
add noise of mode 0 in (−½, ½), then take the conditional mean given the noisy value; the temperature T
and the noise's Kumaraswamy `a` are annealed towards hard rounding (T → 0, a → 1: uniform), then a short
straight-through stage trains on the real rounding. Every function is jittable with traced T, a and
progress. The formulas are a few lines each, so they are written here rather than pulling in a
distributions library the project does not otherwise use.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from codec.vecmath import expm1, log1p

_EDGE = 2.0 ** -24   # noise stays this far inside (−½, ½): float32 rounding could otherwise land on ±½
_TINY = float(jnp.finfo(jnp.float32).tiny)


def soft_round(x: ArrayLike, temperature: ArrayLike) -> jax.Array:
    """s_T(x) = ⌊x⌋ + ½ + tanh(r/T) / (2·tanh(1/(2T))), r = x − ⌊x⌋ − ½ (T > 0).

    Continuous and increasing; integers and half-integers are fixed points. T → 0 gives rounding
    (|s_T(x) − round(x)| ≤ e^(−(1 − 2e)/T) at distance e from the nearest integer), large T the
    identity (|s_T(x) − x| ≈ |r·(1/12 − r²/3)| / T² ≤ 0.0161 / T²).
    """
    x, t = jnp.asarray(x, jnp.float32), jnp.asarray(temperature, jnp.float32)
    centre = jnp.floor(x) + 0.5
    return centre + jnp.tanh((x - centre) / t) / (2.0 * jnp.tanh(0.5 / t))


def _artanh_scaled(d: jax.Array, t: jax.Array) -> jax.Array:
    """T·artanh(2d·tanh(1/(2T))) for 0 ≤ d ≤ ½, at most ½; the inverse of soft-rounding's offset.

    artanh(v) = ½·(ln(1 + v) − ln(1 − v)). For v > ½ (small T), 1 − v is written as
    (1 − 2d) + 4d·sigmoid(−1/T) (since 1 − tanh(c) = 2·sigmoid(−2c)), which keeps its precision when
    tanh(1/(2T)) rounds to 1; for v ≤ ½ (always at large T, where T multiplies the error) log1p(−v).
    """
    v = 2.0 * d * jnp.tanh(0.5 / t)
    one_minus_v = (1.0 - 2.0 * d) + 4.0 * d * jax.nn.sigmoid(-1.0 / t)
    # both branches stay finite (clamped arguments), so neither can poison the gradient of `where`
    small, large = log1p(-jnp.minimum(v, 0.5)), jnp.log(jnp.maximum(one_minus_v, _TINY))
    log_1m_v = jnp.where(v <= 0.5, small, large)
    return jnp.minimum(0.5 * t * (log1p(v) - log_1m_v), 0.5)


def soft_round_inverse(y: ArrayLike, temperature: ArrayLike) -> jax.Array:
    """The inverse of `soft_round`: s_T⁻¹(y) = ⌊y⌋ + ½ + T·artanh(2d·tanh(1/(2T))), d = y − ⌊y⌋ − ½."""
    y, t = jnp.asarray(y, jnp.float32), jnp.asarray(temperature, jnp.float32)
    centre = jnp.floor(y) + 0.5
    d = y - centre
    positive = d >= 0
    offset = _artanh_scaled(jnp.where(positive, d, -d), t)   # odd in d; both branches stay in [0, ½]
    return centre + jnp.where(positive, offset, -offset)


def soft_round_conditional_mean(y: ArrayLike, temperature: ArrayLike) -> jax.Array:
    """E[x | s_T(x) + u = y] for u uniform on (−½, ½) and x locally uniform: s_T⁻¹(y − ½) + ½.

    The second soft-rounding of the training quantizer (Agustsson & Theis §4.1). As T → 0 it tends to
    round(y), linearly: y = k + δ lands within T·artanh(2|δ|) of k; large T gives y.
    """
    return soft_round_inverse(jnp.asarray(y, jnp.float32) - 0.5, temperature) + 0.5


def kumaraswamy_b(a: ArrayLike) -> jax.Array:
    """b = (2^a·(a − 1) + 1)/a: Kumaraswamy(a, b)'s mode ((a − 1)/(ab − 1))^(1/a) is then ½ (a ≥ 1)."""
    a = jnp.asarray(a, jnp.float32)
    return (2.0 ** a * (a - 1.0) + 1.0) / a


def kumaraswamy_icdf(v: ArrayLike, a: ArrayLike) -> jax.Array:
    """The noise for uniform v ∈ [0, 1): u − ½ with u = (1 − (1 − v)^(1/b))^(1/a), the inverse of the
    CDF F(u) = 1 − (1 − u^a)^b, b = kumaraswamy_b(a); strictly inside (−½, ½), mode 0; a = 1 is uniform.

    In log space (expm1/log1p, codec.vecmath's vectorized forms) so that v near 0 or 1 keeps its
    precision; clipped 2^-24 inside the interval, a change of at most 2^-24 in any quantile.
    """
    v, a = jnp.asarray(v, jnp.float32), jnp.asarray(a, jnp.float32)
    one_minus_w = -expm1(log1p(-v) / kumaraswamy_b(a))   # 1 − (1 − v)^(1/b)
    u = jnp.exp(jnp.log(jnp.maximum(one_minus_w, _TINY)) / a)
    return jnp.clip(u, _EDGE, 1.0 - _EDGE) - 0.5


def kumaraswamy_noise(key: jax.Array, shape: tuple[int, ...], a: ArrayLike) -> jax.Array:
    """Kumaraswamy noise of mode 0 in (−½, ½), float32 of `shape`, by inverse CDF from `key`."""
    return kumaraswamy_icdf(jax.random.uniform(key, shape, jnp.float32), a)


def noisy_soft_round(x: ArrayLike, key: jax.Array, temperature: ArrayLike, a: ArrayLike) -> jax.Array:
    """The training-time quantizer: r_T(s_T(x) + u), u Kumaraswamy noise, r_T the conditional mean.

    Differentiable and increasing in x. T → 0 tends to round(x) for any noise u ∈ (−½, ½), though only
    linearly: to within about T·artanh(2|u|); large T gives x + u.
    """
    x = jnp.asarray(x, jnp.float32)
    noisy = soft_round(x, temperature) + kumaraswamy_noise(key, x.shape, a)
    return soft_round_conditional_mean(noisy, temperature)


def round_ste(x: ArrayLike, temperature: ArrayLike | None = None) -> jax.Array:
    """Straight-through rounding: the forward value is exactly round(x) (halves to even, as np.rint and
    codec.quant); the gradient is 1 (temperature None) or soft_round's slope at `temperature`.

    The surrogate is added as (s − stop_gradient(s)), exactly 0 in the forward pass, so no float
    rounding can move the value off the integer.
    """
    x = jnp.asarray(x, jnp.float32)
    surrogate = x if temperature is None else soft_round(x, temperature)
    return (surrogate - jax.lax.stop_gradient(surrogate)) + jax.lax.stop_gradient(jnp.round(x))


def linear(progress: ArrayLike, start: ArrayLike, end: ArrayLike) -> jax.Array:
    """start + (end − start)·p with the progress p clipped to [0, 1]."""
    p = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
    return start + (end - start) * p


@dataclasses.dataclass(frozen=True)
class Anneal:
    """Soft-rounding temperature and Kumaraswamy `a`, each linear in training progress (0 → 1).

    Defaults are NVRC's for weights (issue 14: T 0.5 → 0.3, a 2 → 1; it found C3's T 0.3 → 0.1
    unstable); C3's image schedule is Anneal(temperature=(0.3, 0.1)). Hashable: a valid jit static.
    """

    temperature: tuple[float, float] = (0.5, 0.3)   # (start, end), > 0
    kumaraswamy_a: tuple[float, float] = (2.0, 1.0)   # (start, end), ≥ 1 (1 = uniform noise)

    def __post_init__(self) -> None:
        if min(self.temperature) <= 0:
            raise ValueError(f"soft-rounding temperatures must be > 0, got {self.temperature}")
        if min(self.kumaraswamy_a) < 1:
            raise ValueError(f"Kumaraswamy a must be >= 1 (mode 1/2), got {self.kumaraswamy_a}")

    def at(self, progress: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """(temperature, a) at `progress` (a traced scalar is fine; clipped to [0, 1])."""
        return linear(progress, *self.temperature), linear(progress, *self.kumaraswamy_a)
