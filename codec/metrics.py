"""Frame-quality metrics: the one definition used everywhere in nerva.

Training losses, the fit summary, the player and the rate–distortion sweeps all
import from here, so every number nerva prints follows this one convention.

Frames
    Float arrays with values in [0, 1], shape ``(T, H, W, 3)`` (RGB, channels
    last). A single frame ``(H, W, 3)`` is accepted and treated as ``T = 1``;
    the per-frame functions then return shape ``(1,)``. ``uint8`` input is
    converted with ``x / 255`` to float32. Reference first, decoded second.

PSNR
    Per frame: ``PSNR = -10·log10(MSE)`` with the MSE taken over all
    ``H·W·3`` RGB values and a data range of 1 (no 255 factor, as in
    NeRV/HNeRV). Identical frames give ``inf``. A video's PSNR is the
    arithmetic mean of the per-frame PSNRs (not the PSNR of the video's mean
    MSE), see :func:`mean_psnr`: it is ``inf`` only if *every* frame is
    identical; otherwise every per-frame PSNR is capped at
    ``PSNR_CAP_DB = 100`` dB before averaging, so an identical frame counts
    as 100 dB and never as less than a nearly identical one. The cap only
    touches near-lossless frames: a single 8-bit value off by one level is
    96.9 dB at 176×144 and 115.9 dB at 1920×1080.

PSNR-Y
    The same on BT.601 luma ``Y = 0.299 R + 0.587 G + 0.114 B``, full range
    [0, 1] (no 16–235 studio swing), data range 1.

SSIM (single scale)
    As ``pytorch_msssim`` computes it (its 1.0 release): an 11×11 Gaussian window, σ = 1.5
    (separable, normalised to sum 1), ``K1 = 0.01``, ``K2 = 0.03``, so
    ``C1 = 0.01²`` and ``C2 = 0.03²``, *valid* filtering (no padding, the
    maps are ``(H-10) × (W-10)``), local variances as ``E[x²] - E[x]²``. The
    SSIM map is averaged over space per channel, then the three channel
    values are averaged. No clamping of negative values.

MS-SSIM
    Also as in ``pytorch_msssim`` 1.0: weights ``[0.0448, 0.2856, 0.3001, 0.2363, 0.1333]``;
    at scales 1..n-1 the spatial mean of the contrast-structure map ``cs``,
    at the last scale the full SSIM (luminance · cs); each per-scale,
    per-channel value goes through ``relu``; the value per channel is
    ``prod_i v_i ** w_i``, then the channels are averaged. Between scales
    both frames are 2×2 average-pooled with stride 2 and zero padding of
    ``size % 2`` on *both* sides of each odd dimension, the zeros counted
    in the divisor of 4 (``avg_pool2d(kernel 2, stride 2, padding=size % 2)``;
    the trailing pad never falls in a window).

    Scale rule: ``pytorch_msssim`` requires ``min(H, W) > (11-1)·2⁴ = 160``
    for 5 scales. For smaller frames (QCIF carphone is 176×144) nerva uses the
    largest ``n ≤ 5`` with ``min(H, W) > 10·2^(n-1)`` — 144 → 4 scales,
    64 → 3 — and renormalises the first ``n`` weights to sum to 1. With 5
    scales the weights are used as published (they sum to 1.0001), so values
    match ``pytorch_msssim`` up to float32 rounding in that case. :func:`ms_ssim` returns
    ``n`` so callers can print it, e.g. "MS-SSIM (4 scales)". Values for
    different ``n`` are not comparable.

Implementation: jax.numpy, jit-compiled; the per-frame functions are
vectorised over frames. The Gaussian is applied as two 1-D passes of 11
shifted slices (~10x faster on CPU than ``lax.conv`` with one channel), with
a hand-written VJP. :func:`ssim` and :func:`ms_ssim` are differentiable
(reverse mode) w.r.t. both arguments and safe to call inside ``jax.jit``:
shapes decide everything, data decides nothing. :func:`measure` takes whole
videos, moves ``chunk`` frames per device call and loops over frames inside
the call, so its numbers do not depend on ``chunk`` (bit for bit) and memory
is bounded by one frame's intermediates. Everything is float32; identical
frames can give SSIM/MS-SSIM of 1 ± 2e-7.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "LUMA_BT601",
    "MS_SSIM_WEIGHTS",
    "PSNR_CAP_DB",
    "Quality",
    "mean_psnr",
    "measure",
    "ms_ssim",
    "ms_ssim_scales",
    "mse",
    "psnr",
    "psnr_y",
    "ssim",
]

PSNR_CAP_DB = 100.0
LUMA_BT601 = (0.299, 0.587, 0.114)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WIN_SIZE = 11
WIN_SIGMA = 1.5
K1, K2 = 0.01, 0.03
_C1 = K1**2  # (K1 · data_range)², data_range = 1
_C2 = K2**2


def _gauss_1d(size: int = WIN_SIZE, sigma: float = WIN_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian taps centred on ``size // 2``, float32."""
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).astype(np.float32)


_GAUSS = tuple(float(v) for v in _gauss_1d())


# --------------------------------------------------------------------------- #
# input handling
# --------------------------------------------------------------------------- #
def _frames_shape(x) -> tuple[int, ...]:
    """Validate a frame array's shape; return it as (T, H, W, 3)."""
    shape = tuple(np.shape(x))
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) or (H, W, 3) RGB, got shape {np.shape(x)}")
    return shape


def _pair_shape(a, b) -> tuple[int, ...]:
    sa, sb = _frames_shape(a), _frames_shape(b)
    if sa != sb:
        raise ValueError(f"reference and decoded shapes differ: {np.shape(a)} vs {np.shape(b)}")
    return sa


def _pair(a, b):
    """Validate a (reference, decoded) pair; return both as (T,H,W,3) arrays and the shape."""
    shape = _pair_shape(a, b)
    a, b = (x if hasattr(x, "ndim") else np.asarray(x) for x in (a, b))
    return a.reshape(shape), b.reshape(shape), shape


def _to_float(x) -> jnp.ndarray:
    """uint8 or float frames → float32 in [0, 1], same shape."""
    x = jnp.asarray(x)
    if x.dtype == jnp.uint8:
        x = x.astype(jnp.float32) / jnp.float32(255.0)
    elif jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_:
        raise TypeError(f"integer frames must be uint8, got {x.dtype}")
    else:
        x = x.astype(jnp.float32)
    return x


def _host_float(x: np.ndarray) -> np.ndarray:
    """Host-side twin of :func:`_to_float` for :func:`measure` chunks."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        raise TypeError(f"integer frames must be uint8, got {x.dtype}")
    return x.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- #
# PSNR family
# --------------------------------------------------------------------------- #
def _db(m: jnp.ndarray) -> jnp.ndarray:
    """MSE (data range 1) → dB; 0 → +inf."""
    return -10.0 * jnp.log10(m)


@jax.jit
def _mse(a, b):
    a, b = _to_float(a), _to_float(b)
    return jnp.mean(jnp.square(a - b), axis=(1, 2, 3))


@jax.jit
def _mse_y(a, b):
    a, b = _to_float(a), _to_float(b)
    luma = jnp.asarray(LUMA_BT601, jnp.float32)
    d = (a - b) @ luma  # Y is linear, so Y(a) - Y(b) = Y(a - b)
    return jnp.mean(jnp.square(d), axis=(1, 2))


def mse(a, b) -> jnp.ndarray:
    """Mean squared error per frame over all RGB values. Frames (T,H,W,3) → (T,)."""
    a, b, _ = _pair(a, b)
    return _mse(a, b)


def psnr(a, b) -> jnp.ndarray:
    """RGB PSNR per frame in dB, data range 1; inf where identical. (T,H,W,3) → (T,)."""
    return _db(mse(a, b))


def psnr_y(a, b) -> jnp.ndarray:
    """BT.601 full-range luma PSNR per frame in dB, data range 1. (T,H,W,3) → (T,)."""
    a, b, _ = _pair(a, b)
    return _db(_mse_y(a, b))


def mean_psnr(per_frame) -> float:
    """Video PSNR from per-frame PSNRs (T,): inf iff all frames are inf, else mean of min(p, 100 dB)."""
    p = np.asarray(per_frame, dtype=np.float64).ravel()
    if p.size == 0:
        raise ValueError("mean_psnr of zero frames")
    if np.all(np.isposinf(p)):
        return float("inf")
    return float(np.mean(np.minimum(p, PSNR_CAP_DB)))


# --------------------------------------------------------------------------- #
# SSIM family
# --------------------------------------------------------------------------- #
def _blur_valid(x: jnp.ndarray) -> jnp.ndarray:
    """Valid separable Gaussian over the last two axes: (..., H, W) → (..., H-10, W-10)."""
    k = len(_GAUSS)
    h = x.shape[-2] - k + 1
    x = sum(g * x[..., i : i + h, :] for i, g in enumerate(_GAUSS))
    w = x.shape[-1] - k + 1
    return sum(g * x[..., :, i : i + w] for i, g in enumerate(_GAUSS))


@jax.custom_vjp
def _blur(x: jnp.ndarray) -> jnp.ndarray:
    """:func:`_blur_valid` with a hand-written VJP.

    Autodiff of the 22 shifted slices (a pad per slice) ran and compiled ~7x
    slower on CPU than this rule (CIF, 16 frames). The blur is linear and
    the taps are symmetric, so its adjoint is the same blur applied to the
    cotangent zero-padded by 10 on every side (a "full" correlation).
    Reverse mode only (no ``jax.jvp``/``jacfwd`` through SSIM).
    """
    return _blur_valid(x)


def _blur_fwd(x):
    return _blur_valid(x), None


def _blur_bwd(_, ct):
    k = len(_GAUSS) - 1
    return (_blur_valid(jnp.pad(ct, [(0, 0)] * (ct.ndim - 2) + [(k, k), (k, k)])),)


_blur.defvjp(_blur_fwd, _blur_bwd)


def _ssim_cs(x: jnp.ndarray, y: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Channel-first frames (T,C,H,W) → (ssim, cs) per frame and channel, each (T,C)."""
    mu_x, mu_y, e_xx, e_yy, e_xy = _blur(jnp.stack([x, y, x * x, y * y, x * y]))
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    cs_map = (2.0 * cov + _C2) / (var_x + var_y + _C2)
    lum_map = (2.0 * mu_x * mu_y + _C1) / (mu_x * mu_x + mu_y * mu_y + _C1)
    return _spatial_mean(lum_map * cs_map), _spatial_mean(cs_map)


def _spatial_mean(z: jnp.ndarray) -> jnp.ndarray:
    """Mean over the last two axes as a dot product (faster than XLA's CPU reduce: SSIM -30 %)."""
    n = z.shape[-2] * z.shape[-1]
    return (z.reshape(*z.shape[:-2], n) @ jnp.ones((n,), z.dtype)) / n


def _pool2(x: jnp.ndarray) -> jnp.ndarray:
    """avg_pool2d(kernel 2, stride 2, padding=size % 2, zeros counted): (...,H,W) → (...,⌈H/2⌉,⌈W/2⌉)."""
    h, w = x.shape[-2:]
    ph, pw = h % 2, w % 2
    # Symmetric padding p: windows cover padded[0 : h + p], so only the leading pad is ever read.
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(ph, 0), (pw, 0)])
    x = x.reshape(*x.shape[:-2], (h + ph) // 2, 2, (w + pw) // 2, 2)
    return jnp.mean(x, axis=(-3, -1))


def _channels_first(a) -> jnp.ndarray:
    return jnp.transpose(_to_float(a), (0, 3, 1, 2))


def _check_ssim_size(h: int, w: int) -> None:
    if min(h, w) < WIN_SIZE:
        raise ValueError(f"SSIM needs frames of at least {WIN_SIZE}x{WIN_SIZE}, got {h}x{w}")


@jax.jit
def _ssim(a, b):
    s, _ = _ssim_cs(_channels_first(a), _channels_first(b))
    return jnp.mean(s, axis=-1)


def ssim(a, b) -> jnp.ndarray:
    """Single-scale SSIM per frame (channel mean). (T,H,W,3) → (T,). Differentiable."""
    a, b, (_, h, w, _) = _pair(a, b)
    _check_ssim_size(h, w)
    return _ssim(a, b)


def ms_ssim_scales(height: int, width: int) -> int:
    """Largest n ≤ 5 with min(H, W) > 10·2^(n-1); 0 if even one scale does not fit."""
    side = min(height, width)
    n = 0
    while n < len(MS_SSIM_WEIGHTS) and side > (WIN_SIZE - 1) * 2**n:
        n += 1
    return n


def _scale_weights(n: int) -> np.ndarray:
    w = np.asarray(MS_SSIM_WEIGHTS[:n], dtype=np.float64)
    if n < len(MS_SSIM_WEIGHTS):
        w = w / w.sum()
    return w.astype(np.float32)


def _safe_pow(v: jnp.ndarray, e: float) -> jnp.ndarray:
    """v**e for v ≥ 0, e in (0,1], with a finite gradient at v = 0 (value there is 0)."""
    pos = v > 0
    return jnp.where(pos, jnp.where(pos, v, 1.0) ** e, 0.0)


@partial(jax.jit, static_argnums=2)
def _ms_ssim(a, b, n: int):
    x, y = _channels_first(a), _channels_first(b)
    weights = _scale_weights(n)
    out = 1.0
    for i in range(n):
        s, cs = _ssim_cs(x, y)
        if i < n - 1:
            v = jax.nn.relu(cs)
            x, y = _pool2(x), _pool2(y)
        else:
            v = jax.nn.relu(s)
        out = out * _safe_pow(v, float(weights[i]))
    return jnp.mean(out, axis=-1)  # product per channel, then mean over channels


def ms_ssim(a, b, scales: int | None = None) -> tuple[jnp.ndarray, int]:
    """MS-SSIM per frame and the number of scales used: (T,H,W,3) → ((T,), n). Differentiable.

    ``scales=None`` picks the largest count that fits (see module docstring);
    an explicit ``scales`` must satisfy the same rule.
    """
    a, b, (_, h, w, _) = _pair(a, b)
    fit = ms_ssim_scales(h, w)
    n = fit if scales is None else int(scales)
    if fit == 0:
        raise ValueError(f"MS-SSIM needs frames larger than {WIN_SIZE - 1}x{WIN_SIZE - 1}, got {h}x{w}")
    if not 1 <= n <= fit:
        raise ValueError(f"{h}x{w} frames allow 1..{fit} MS-SSIM scales (min side > 10·2^(n-1)), asked for {n}")
    return _ms_ssim(a, b, n), n


# --------------------------------------------------------------------------- #
# whole videos
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Quality:
    """Video-level quality: mean-of-frames PSNR / PSNR-Y (dB), mean MS-SSIM and its scale count."""

    psnr: float
    psnr_y: float
    ms_ssim: float
    ms_ssim_scales: int


@partial(jax.jit, static_argnums=2)
def _measure_chunk(a, b, n: int):
    """(T,H,W,3) pair → per-frame (PSNR, PSNR-Y, MS-SSIM), one frame per loop step.

    Looping (rather than batching) makes each frame's numbers independent of
    the chunk size bit for bit: XLA's CPU dot/reduce blocking depends on the
    batch size. It is also no slower (better cache use on large frames).
    """

    def one(frames):
        x, y = (f[None] for f in frames)
        return _db(_mse(x, y))[0], _db(_mse_y(x, y))[0], _ms_ssim(x, y, n)[0]

    return jax.lax.map(one, (a, b))


def measure(reference, decoded, chunk: int = 16) -> Quality:
    """Quality of a decoded video against its reference, both (T,H,W,3) uint8 or float [0,1].

    Frames go to the device ``chunk`` at a time (converted to float32 per chunk
    on the host) and are measured one by one inside the call; the last chunk is
    padded with repeats of its last frame so a video compiles one program.
    Float frames on a 0–255 scale are rejected (max > 2).
    """
    ref, dec = np.asarray(reference), np.asarray(decoded)
    t, h, w, _ = _pair_shape(ref, dec)
    ref, dec = ref.reshape(t, h, w, 3), dec.reshape(t, h, w, 3)
    if t == 0:
        raise ValueError("measure of zero frames")
    if chunk < 1:
        raise ValueError(f"chunk must be ≥ 1, got {chunk}")
    n = ms_ssim_scales(h, w)
    if n == 0:
        raise ValueError(f"MS-SSIM needs frames larger than {WIN_SIZE - 1}x{WIN_SIZE - 1}, got {h}x{w}")
    chunk = min(chunk, t)
    parts = []
    for start in range(0, t, chunk):
        idx = np.minimum(np.arange(start, start + chunk), t - 1)
        a, b = _host_float(ref[idx]), _host_float(dec[idx])
        if max(float(a.max()), float(b.max())) > 2.0:
            raise ValueError("float frames must be in [0, 1]: pass uint8 or divide by 255")
        vals = _measure_chunk(a, b, n)
        parts.append(np.stack([np.asarray(v) for v in vals])[:, : t - start])
    p, py, ms = np.concatenate(parts, axis=1)
    return Quality(
        psnr=mean_psnr(p),
        psnr_y=mean_psnr(py),
        ms_ssim=float(np.mean(ms.astype(np.float64))),
        ms_ssim_scales=n,
    )
