"""codec.vecmath against numpy's float64 expm1/log1p (an independent implementation)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codec.vecmath import expm1, log1p


def _grid(lo: float, hi: float) -> np.ndarray:
    """Values from ±1e-30 to the bounds, log-spaced, plus a uniform sweep, as float32."""
    tiny = np.logspace(-30, 0, 4001)
    x = np.concatenate([tiny * hi, -tiny * -lo, np.linspace(lo, hi, 20001), [0.0]])
    return x[(x > lo) & (x < hi)].astype(np.float32)


def _relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-300)))


def test_expm1_keeps_float32_precision_from_tiny_to_large_arguments():
    x = _grid(-80.0, 80.0)
    # 5e-7: a few float32 ulps (2^-24 = 6e-8 each), the exponential's own rounding beyond the series
    assert _relative_error(jax.jit(expm1)(x), np.expm1(x.astype(np.float64))) < 5e-7
    assert float(expm1(jnp.float32(0.0))) == 0.0


def test_log1p_keeps_float32_precision_where_1_plus_x_rounds():
    x = _grid(-0.9999, 1e6)
    assert _relative_error(jax.jit(log1p)(x), np.log1p(x.astype(np.float64))) < 5e-7
    # where 1 + x rounds to 1, ln(1 + x) is x to float32 precision
    assert float(log1p(jnp.float32(3e-9))) == pytest.approx(3e-9, rel=1e-7)


def test_log1p_has_the_derivative_1_over_1_plus_x_and_expm1_has_e_to_the_x():
    x = np.array([-0.9, -0.3, -1e-6, 0.0, 1e-8, 0.25, 3.0, 1e4], np.float32)
    d_log = jax.vmap(jax.grad(log1p))(jnp.asarray(x))
    assert _relative_error(d_log, 1.0 / (1.0 + x.astype(np.float64))) < 5e-7
    d_exp = jax.vmap(jax.grad(expm1))(jnp.asarray(x[:-1]))
    assert _relative_error(d_exp, np.exp(x[:-1].astype(np.float64))) < 5e-7
