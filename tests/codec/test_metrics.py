"""Properties of codec/metrics.py: hand-computed PSNRs, and SSIM/MS-SSIM against an independent float64 scipy reference."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from codec import metrics as M

WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])


# --------------------------------------------------------------------------- #
# independent float64 reference (pytorch_msssim semantics, written from the math)
# --------------------------------------------------------------------------- #
def _ref_window() -> np.ndarray:
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    g /= g.sum()
    return np.outer(g, g)


def _ref_ssim_cs(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """One channel (H, W) float64 → (mean SSIM map, mean cs map), valid 2-D correlation."""
    win = _ref_window()
    f = lambda z: signal.correlate(z, win, mode="valid")  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cov = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    cs = (2 * cov + c2) / (vx + vy + c2)
    lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
    return float(np.mean(lum * cs)), float(np.mean(cs))


def _ref_avg_pool(x: np.ndarray) -> np.ndarray:
    """torch avg_pool2d(kernel 2, stride 2, padding=(H%2, W%2), count_include_pad=True) on (H, W)."""
    ph, pw = x.shape[0] % 2, x.shape[1] % 2
    xp = np.pad(x, ((ph, ph), (pw, pw)))
    oh = (x.shape[0] + 2 * ph - 2) // 2 + 1
    ow = (x.shape[1] + 2 * pw - 2) // 2 + 1
    out = np.empty((oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[i, j] = xp[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].sum() / 4.0
    return out


def _ref_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """(H, W, 3) → SSIM averaged over channels."""
    return float(np.mean([_ref_ssim_cs(a[..., c], b[..., c])[0] for c in range(3)]))


def _ref_ms_ssim(a: np.ndarray, b: np.ndarray, n: int) -> float:
    """(H, W, 3) → MS-SSIM with n scales: per channel prod(relu(v_i)**w_i), then channel mean."""
    w = WEIGHTS[:n] / (WEIGHTS[:n].sum() if n < 5 else 1.0)
    per_channel = []
    for c in range(3):
        x, y, val = a[..., c], b[..., c], 1.0
        for i in range(n):
            s, cs = _ref_ssim_cs(x, y)
            v = s if i == n - 1 else cs
            val *= max(v, 0.0) ** w[i]
            x, y = _ref_avg_pool(x), _ref_avg_pool(y)
        per_channel.append(val)
    return float(np.mean(per_channel))


def _pair(h: int, w: int, t: int = 1, noise: float = 0.08, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish random reference (T, H, W, 3) and a noisy copy, float64 in [0, 1]."""
    rng = np.random.default_rng(seed)
    base = rng.random((t, h + 4, w + 4, 3))
    ref = sum(base[:, i : i + h, j : j + w] for i in range(5) for j in range(5)) / 25.0
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    dec = np.clip(ref + noise * rng.standard_normal(ref.shape), 0.0, 1.0)
    return ref, dec


# --------------------------------------------------------------------------- #
# identical frames
# --------------------------------------------------------------------------- #
def test_identical_frames_give_inf_psnr_and_unit_ssim_and_ms_ssim():
    a, _ = _pair(48, 40, t=3)
    assert np.all(np.isposinf(np.asarray(M.psnr(a, a))))
    assert np.all(np.isposinf(np.asarray(M.psnr_y(a, a))))
    np.testing.assert_allclose(np.asarray(M.ssim(a, a)), 1.0, atol=1e-6)
    vals, n = M.ms_ssim(a, a)
    np.testing.assert_allclose(np.asarray(vals), 1.0, atol=1e-6)
    assert n == 2
    assert M.mean_psnr(M.psnr(a, a)) == math.inf


def test_mean_psnr_is_inf_only_if_all_frames_identical_else_caps_at_100_db():
    assert M.mean_psnr([math.inf, math.inf]) == math.inf
    assert M.mean_psnr([math.inf, 30.0]) == pytest.approx((100.0 + 30.0) / 2)
    assert M.mean_psnr(np.array([20.0, 30.0, 40.0])) == pytest.approx(30.0)


# --------------------------------------------------------------------------- #
# hand-computed PSNR
# --------------------------------------------------------------------------- #
def test_constant_offset_of_0_1_is_20_db_psnr():
    a = np.full((2, 16, 16, 3), 0.25, np.float32)
    b = a + np.float32(0.1)
    np.testing.assert_allclose(np.asarray(M.psnr(a, b)), 20.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(M.psnr_y(a, b)), 20.0, atol=1e-4)  # luma weights sum to 1


def test_known_mse_gives_known_db():
    a = np.zeros((1, 10, 10, 3), np.float32)
    b = a.copy()
    b[0, :5] = 0.1  # half the values off by 0.1 → MSE 0.005
    np.testing.assert_allclose(np.asarray(M.mse(a, b)), [0.005], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(M.psnr(a, b)), [10 * math.log10(1 / 0.005)], atol=1e-4)


def test_psnr_y_of_pure_green_offset_matches_bt601_arithmetic():
    a = np.full((1, 12, 12, 3), 0.4, np.float32)
    b = a.copy()
    b[..., 1] += 0.1
    # Y error 0.587·0.1 everywhere; RGB error 0.1 on one channel in three.
    np.testing.assert_allclose(np.asarray(M.psnr_y(a, b)), [-20 * math.log10(0.0587)], atol=1e-4)
    np.testing.assert_allclose(np.asarray(M.psnr(a, b)), [10 * math.log10(300.0)], atol=1e-4)


def test_single_frame_hwc_input_is_one_frame():
    a, b = _pair(32, 32)
    assert M.psnr(a[0], b[0]).shape == (1,)
    np.testing.assert_allclose(np.asarray(M.ssim(a[0], b[0])), np.asarray(M.ssim(a, b)), rtol=0, atol=0)


# --------------------------------------------------------------------------- #
# SSIM / MS-SSIM against the float64 reference
# --------------------------------------------------------------------------- #
def test_ssim_matches_scipy_reference_on_random_200x200():
    a, b = _pair(200, 200, noise=0.1, seed=1)
    got = float(M.ssim(a.astype(np.float32), b.astype(np.float32))[0])
    assert got == pytest.approx(_ref_ssim(a[0], b[0]), abs=1e-4)


def test_five_scale_ms_ssim_matches_scipy_reference_on_random_200x200():
    a, b = _pair(200, 200, noise=0.1, seed=2)  # 200 → 100 → 50 → 25 → 13: one odd-size pool
    vals, n = M.ms_ssim(a.astype(np.float32), b.astype(np.float32))
    assert n == 5
    assert float(vals[0]) == pytest.approx(_ref_ms_ssim(a[0], b[0], 5), abs=1e-4)


def test_ms_ssim_pools_odd_sizes_like_pytorch_msssim():
    a, b = _pair(171, 163, noise=0.1, seed=3)  # 171→86→43→22→11, 163→82→41→21→11
    vals, n = M.ms_ssim(a.astype(np.float32), b.astype(np.float32))
    assert n == 5
    assert float(vals[0]) == pytest.approx(_ref_ms_ssim(a[0], b[0], 5), abs=1e-4)


@pytest.mark.parametrize(
    ("h", "w", "expected"),
    [(200, 200, 5), (161, 300, 5), (160, 300, 4), (144, 176, 4), (64, 64, 3), (21, 40, 2), (11, 11, 1)],
)
def test_scale_count_is_largest_n_with_min_side_above_10_times_2_pow_n_minus_1(h, w, expected):
    rule = max(n for n in range(6) if n == 0 or min(h, w) > 10 * 2 ** (n - 1))
    assert rule == expected
    assert M.ms_ssim_scales(h, w) == expected


def test_cif_176x144_falls_back_to_4_scales_and_64x64_to_3():
    a, b = _pair(144, 176, noise=0.05)
    _, n = M.ms_ssim(a, b)
    assert n == 4
    a, b = _pair(64, 64, noise=0.05)
    vals, n = M.ms_ssim(a, b)
    assert n == 3
    assert float(vals[0]) == pytest.approx(_ref_ms_ssim(a[0], b[0], 3), abs=1e-4)
    with pytest.raises(ValueError):
        M.ms_ssim(a, b, scales=4)


def test_ms_ssim_decreases_monotonically_as_gaussian_noise_grows():
    ref, _ = _pair(64, 64, noise=0.0, seed=4)
    rng = np.random.default_rng(5)
    z = rng.standard_normal(ref.shape)
    sigmas = [0.0, 0.01, 0.03, 0.1, 0.3]
    vals = [float(M.ms_ssim(ref, np.clip(ref + s * z, 0, 1))[0][0]) for s in sigmas]
    assert all(x > y for x, y in zip(vals, vals[1:])), vals


def test_ssim_and_ms_ssim_gradients_wrt_decoded_are_finite_and_match_finite_differences():
    a, b = _pair(32, 32, noise=0.05, seed=9)
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    direction = jnp.asarray(np.random.default_rng(10).standard_normal(b.shape), jnp.float32)
    losses = (lambda d: jnp.mean(1.0 - M.ssim(a, d)), lambda d: jnp.mean(1.0 - M.ms_ssim(a, d)[0]))
    for loss in losses:
        grad_fn = jax.jit(jax.grad(loss))
        for d in (b, a):  # also at the optimum, where every per-scale term is 1
            g = np.asarray(grad_fn(d))
            assert g.shape == b.shape and np.all(np.isfinite(g))
        analytic = float(jnp.vdot(grad_fn(b), direction))
        eps = 1e-3
        numeric = (float(loss(b + eps * direction)) - float(loss(b - eps * direction))) / (2 * eps)
        assert analytic != 0.0
        assert analytic == pytest.approx(numeric, rel=2e-2)


def test_blur_gradient_is_the_adjoint_full_correlation():
    rng = np.random.default_rng(8)
    x = rng.random((2, 13, 15)).astype(np.float32)
    ct = rng.standard_normal((2, 3, 5)).astype(np.float32)
    out, vjp = jax.vjp(M._blur, jnp.asarray(x))
    win = _ref_window()
    np.testing.assert_allclose(np.asarray(out), [signal.correlate(z, win, mode="valid") for z in x], atol=1e-6)
    expected = [signal.convolve(c, win, mode="full") for c in ct.astype(np.float64)]
    np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(ct))[0]), expected, atol=1e-6)


# --------------------------------------------------------------------------- #
# measure
# --------------------------------------------------------------------------- #
def test_measure_gives_same_numbers_for_uint8_and_float_inputs():
    a, b = _pair(48, 40, t=7, noise=0.05, seed=6)
    a8, b8 = np.round(a * 255).astype(np.uint8), np.round(b * 255).astype(np.uint8)
    q8 = M.measure(a8, b8)
    qf = M.measure(a8.astype(np.float32) / 255, b8.astype(np.float32) / 255)
    assert q8 == qf
    assert q8.ms_ssim_scales == 2
    assert q8.psnr == pytest.approx(M.mean_psnr(M.psnr(a8, b8)), abs=1e-4)  # float32 MSE


def test_measure_chunking_does_not_change_results():
    a, b = _pair(48, 40, t=7, noise=0.05, seed=7)
    assert M.measure(a, b, chunk=3) == M.measure(a, b, chunk=16)


def test_measure_of_identical_video_reports_inf_psnr():
    a, _ = _pair(48, 40, t=3)
    q = M.measure(a, a, chunk=3)
    assert q.psnr == math.inf and q.psnr_y == math.inf
    assert q.ms_ssim == pytest.approx(1.0, abs=1e-6)


def test_measure_rejects_float_frames_on_a_0_255_scale():
    a, b = _pair(48, 40, t=3)
    with pytest.raises(ValueError, match="0, 1"):
        M.measure(a * 255, b * 255, chunk=3)
