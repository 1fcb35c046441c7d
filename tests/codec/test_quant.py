"""Uniform per-channel quantization: level counts, error bounds, exact zeros, float16 steps, straight-through."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codec import quant

SHAPES = [(3, 3, 16, 32), (48, 24), (5, 7, 3), (1000,)]
BITS = [2, 4, 8]


def weights(shape, seed=0, zero_fraction=0.0):
    """Random float32 weights with very different scales per channel; some channels one-signed."""
    rng = np.random.default_rng(seed)
    channels = shape[-1] if len(shape) >= 2 else 1
    w = rng.standard_normal(shape) * rng.uniform(0.05, 3.0, channels)
    if len(shape) >= 2 and channels >= 3:
        w[..., 0] = np.abs(w[..., 0])    # all-positive channel: levels start at 0
        w[..., 1] = -np.abs(w[..., 1])   # all-negative channel: levels end at 0
    w[rng.random(shape) < zero_fraction] = 0.0
    return w.astype(np.float32)


def by_channel(x):
    """(N, C) view: one column per quantization channel (a single column for a 1-D tensor)."""
    x = np.asarray(x)
    return x.reshape(-1, x.shape[-1]) if x.ndim >= 2 else x.reshape(-1, 1)


def cases():
    return [(shape, bits) for shape in SHAPES for bits in BITS]


@pytest.mark.parametrize("shape,bits", cases())
def test_symbols_use_at_most_two_to_the_bits_levels_per_channel(shape, bits):
    q = quant.quantize(weights(shape), bits)
    assert q.symbols.dtype == np.int32 and q.symbols.shape == shape and q.bits == bits
    sym = by_channel(q.symbols)
    for c in range(sym.shape[1]):
        assert len(np.unique(sym[:, c])) <= 2 ** bits
        assert sym[:, c].max() - sym[:, c].min() <= 2 ** bits - 1


@pytest.mark.parametrize("shape,bits", cases())
def test_dequantization_error_is_at_most_half_a_step_except_at_a_clipped_top_end(shape, bits):
    w = weights(shape, seed=1)
    q = quant.quantize(w, bits)
    err = by_channel(np.abs(q.dequantize() - w))
    sym = by_channel(q.symbols)
    step = np.broadcast_to(q.steps.astype(np.float64), (sym.shape[1],))
    # The levels start at the symbol of min(w, 0), which the lowest weight rounds to.
    top = np.minimum(sym.min(axis=0), 0) + 2 ** bits - 1
    half = 0.5 * step * (1 + 1e-4)
    at_top = sym == top
    assert np.all(err[~at_top] <= np.broadcast_to(half, err.shape)[~at_top])
    assert np.all(err[at_top] <= np.broadcast_to(step * (1 + 1e-4), err.shape)[at_top])


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_rounding_ties_at_both_ends_are_clipped_to_two_to_the_bits_levels(bits):
    # min/step and max/step are exact half-integers -R/2 and R/2 (R = 2^b - 1): rounding half to even
    # moves both ends outwards, one level too many, so the top end must be clipped.
    half = (2 ** bits - 1) / 2
    w = np.array([-half, half, 0.0, 0.5, -0.5], np.float32) * np.float32(0.25)
    q = quant.quantize(w, bits)
    assert q.steps[0] == np.float16(0.25)
    assert q.symbols.min() == -(2 ** (bits - 1)) and q.symbols.max() == 2 ** (bits - 1) - 1
    assert np.all(np.abs(q.dequantize() - w) <= 0.125)
    fake = np.asarray(jax.jit(quant.fake_quantize, static_argnums=1)(jnp.asarray(w), bits))
    np.testing.assert_array_equal(fake, q.dequantize())


@pytest.mark.parametrize("shape,bits", cases())
def test_exact_zeros_quantize_to_symbol_zero_and_dequantize_to_exact_zero(shape, bits):
    w = weights(shape, seed=2, zero_fraction=0.6)   # as after magnitude pruning
    zeros = w == 0
    assert zeros.mean() > 0.5
    q = quant.quantize(w, bits)
    assert np.all(q.symbols[zeros] == 0)
    assert np.all(q.dequantize()[zeros] == 0.0)


@pytest.mark.parametrize("shape,bits", cases())
def test_steps_are_the_smallest_float16_not_below_range_over_levels_minus_one(shape, bits):
    w = weights(shape, seed=3)
    q = quant.quantize(w, bits)
    assert q.steps.dtype == np.float16
    cols = by_channel(w).astype(np.float64)
    exact = (np.maximum(cols.max(axis=0), 0) - np.minimum(cols.min(axis=0), 0)) / (2 ** bits - 1)
    steps = q.steps.astype(np.float64)
    assert steps.shape == exact.shape
    # float32 arithmetic may cost ~1 ulp (2^-23); rounding to nearest float16 would cost up to 2^-12.
    assert np.all(steps >= exact * (1 - 2.0 ** -22))
    below = np.nextafter(q.steps, np.float16(0)).astype(np.float64)
    assert np.all(below < exact)


@pytest.mark.parametrize("bits", BITS)
def test_each_channel_along_the_last_axis_is_quantized_on_its_own(bits):
    w = weights((3, 3, 16, 32), seed=4)
    q = quant.quantize(w, bits)
    assert q.steps.shape == (32,)
    assert len(np.unique(q.steps)) > 16   # channel scales differ, so must their steps
    for c in range(32):
        alone = quant.quantize(w[..., c:c + 1], bits)
        assert alone.steps[0] == q.steps[c]
        np.testing.assert_array_equal(alone.symbols[..., 0], q.symbols[..., c])


@pytest.mark.parametrize("bits", BITS)
def test_a_one_dimensional_tensor_gets_one_step_over_its_whole_range(bits):
    w = weights((1000,), seed=5)
    q = quant.quantize(w, bits)
    column = quant.quantize(w[:, None], bits)   # a single channel holding every entry
    assert q.steps.shape == (1,)
    assert q.steps[0] == column.steps[0]
    np.testing.assert_array_equal(q.symbols, column.symbols[:, 0])


@pytest.mark.parametrize("shape", [(3, 3, 4, 5), (16, 8), (40,)])
def test_an_all_zero_tensor_gets_step_zero_and_symbols_zero(shape):
    q = quant.quantize(np.zeros(shape, np.float32), 4)
    assert np.all(q.steps == 0) and q.steps.dtype == np.float16
    assert np.all(q.symbols == 0)
    assert np.array_equal(q.dequantize(), np.zeros(shape, np.float32))


def test_an_all_zero_channel_gets_step_zero_and_symbols_zero_beside_nonzero_channels():
    w = weights((3, 3, 8, 6), seed=6)
    w[..., 2] = 0.0
    q = quant.quantize(w, 4)
    assert q.steps[2] == 0 and np.all(q.symbols[..., 2] == 0)
    assert np.all(np.delete(q.steps, 2) > 0)
    assert np.all(q.dequantize()[..., 2] == 0.0)


@pytest.fixture(scope="module")
def fake_quantized():
    """{(shape, bits): (w, fake_quantize(w, bits))}, all cases in one compiled call (compiles are the cost)."""
    ws = {}
    for shape, bits in cases():
        w = weights(shape, seed=7, zero_fraction=0.2)
        w[..., -1] = 0.0   # an all-zero channel (the whole tensor when 1-D) must not give NaN
        ws[shape, bits] = w
    run = jax.jit(lambda ws: {k: quant.fake_quantize(w, k[1]) for k, w in ws.items()})
    out = run({k: jnp.asarray(w) for k, w in ws.items()})
    return {k: (ws[k], np.asarray(out[k])) for k in ws}


@pytest.mark.parametrize("shape,bits", cases())
def test_fake_quantize_forward_matches_quantize_then_dequantize(fake_quantized, shape, bits):
    w, got = fake_quantized[shape, bits]
    want = quant.quantize(w, bits)
    assert got.dtype == np.float32 and got.shape == shape and not np.isnan(got).any()
    same = got == want.dequantize()
    # Only an exact rounding tie may land on a neighbouring level.
    assert same.mean() > 0.9999
    step = np.broadcast_to(want.steps.astype(np.float32), by_channel(w).shape)
    assert np.all(by_channel(np.abs(got - want.dequantize())) <= step)


def test_fake_quantize_gradient_is_the_identity():
    rng = np.random.default_rng(9)
    ws = [jnp.asarray(weights(shape, seed=8)) for shape in SHAPES]
    gs = [jnp.asarray(rng.standard_normal(shape).astype(np.float32)) for shape in SHAPES]

    def loss(ws):
        return sum(jnp.sum(quant.fake_quantize(w, bits) * g) for w, g in zip(ws, gs) for bits in (2, 8)) / 2

    grads = jax.jit(jax.grad(loss))(ws)
    for shape, grad, g in zip(SHAPES, grads, gs):
        np.testing.assert_array_equal(np.asarray(grad), np.asarray(g), err_msg=str(shape))
