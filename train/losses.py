"""Distortion losses on frames in [0, 1]; every loss here is minimised."""

from __future__ import annotations

import jax.numpy as jnp

from codec.metrics import ssim


def l2(pred: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """Mean squared error over all values; its PSNR is -10·log10(loss)."""
    return jnp.mean((pred - target) ** 2)


def fusion6(pred: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """NeRV's default 'Fusion6': 0.7·L1 + 0.3·(1 − SSIM)."""
    return 0.7 * jnp.mean(jnp.abs(pred - target)) + 0.3 * (1.0 - jnp.mean(ssim(target, pred)))


LOSSES = {"l2": l2, "fusion6": fusion6}
