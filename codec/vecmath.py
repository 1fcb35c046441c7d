"""e^y − 1 and ln(1 + x) in forms XLA's CPU backend vectorizes, for per-element loops over many values.

jnp.expm1 and jnp.log1p run fast on their own, but inside a fused elementwise loop XLA's CPU backend
emits them as scalar calls and the whole loop is left unvectorized. Jitted, medians of 200 calls on 84k
values: Kumaraswamy noise's inverse CDF 1.80 ms with them, 0.25 ms with these; soft rounding's
conditional mean 1.07 → 0.30 ms; the code length of 82k symbols 0.43 ms with expm1 where exp took
0.11 ms. Both keep float32 precision (below; tests/codec/test_vecmath.py checks them against numpy).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_SERIES = 0.25   # |argument| below which `expm1` and `log1p` sum their series


def expm1(y: jax.Array) -> jax.Array:
    """e^y − 1: its Taylor series to y^7 for |y| < ¼ (relative error < 2·10^-9), exp(y) − 1 beyond
    (< 5·10^-7, the exponential's own rounding over e^y − 1 ≥ 0.22)."""
    small = jnp.abs(y) < _SERIES
    z = jnp.where(small, y, 0.0)
    series = z * (1.0 + z / 2 * (1.0 + z / 3 * (1.0 + z / 4 * (1.0 + z / 5 * (1.0 + z / 6 * (1.0 + z / 7))))))
    return jnp.where(small, series, jnp.exp(jnp.where(small, 0.0, y)) - 1.0)


@jax.custom_jvp
def log1p(x: jax.Array) -> jax.Array:
    """ln(1 + x) for x > −1: for |x| < ¼ the series 2·artanh(z) = 2z·(1 + z²/3 + … + z¹⁰/11), z = x/(2 + x)
    (|z| < 1/7, relative error < 10^-11 beyond z's own rounding), else ln(1 + x) (< 3·10^-7: the rounding
    of 1 + x over ln(1 + x) ≥ 0.28). (Goldberg's ln(u)·x/(u − 1) does not survive XLA, which simplifies
    (1 + x) − 1 to x.) Its derivative is written out, 1/(1 + x)."""
    small = jnp.abs(x) < _SERIES
    z = jnp.where(small, x, 0.0)
    z = z / (2.0 + z)
    z2 = z * z
    series = 2.0 * z * (1.0 + z2 * (1 / 3 + z2 * (1 / 5 + z2 * (1 / 7 + z2 * (1 / 9 + z2 / 11)))))
    return jnp.where(small, series, jnp.log(1.0 + jnp.where(small, 0.0, x)))


@log1p.defjvp
def _log1p_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return log1p(x), dx / (1.0 + x)
