"""Uniform quantization with an exact zero: w ≈ step · s, integer s, one fp16 step per output channel.

A tensor quantized at b bits has 2^b levels spanning [min(w, 0), max(w, 0)] of each channel, so the step
is range / (2^b − 1). (NeRV's reference divides by 2^b, which gives 2^b + 1 levels: an off-by-one we do
not copy.) The grid contains 0 exactly, so pruned weights stay exactly zero and become the symbol 0 that
the entropy coder makes cheap. Steps are stored as float16 and rounded *up* so the b-bit range is kept;
the encoder dequantizes with the same float16 step as the decoder, so both see identical weights.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class QuantizedTensor:
    symbols: np.ndarray   # int32, same shape as the tensor
    steps: np.ndarray     # float16, (channels,) along the last axis, or (1,) for a per-tensor step
    bits: int             # b: 2^b levels per channel
    kinds: tuple[int, ...] | None = None   # entropy model kinds the encoder may choose from; None: any
                                           # (a tensor trained against one model's rate keeps that model)

    def dequantize(self) -> np.ndarray:
        return dequantize(self.symbols, self.steps)


def channel_axes(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Axes reduced to get one step per channel: all but the last (output channels) for ndim >= 2."""
    return tuple(range(len(shape) - 1)) if len(shape) >= 2 else tuple(range(len(shape)))


def fp16_steps(w: np.ndarray, bits: int) -> np.ndarray:
    """Per-channel float16 steps, rounded up so that 2^b levels still cover [min(w,0), max(w,0)]."""
    axes = channel_axes(w.shape)
    lo = np.minimum(w.min(axis=axes), 0.0) if w.size else np.zeros(1)
    hi = np.maximum(w.max(axis=axes), 0.0) if w.size else np.zeros(1)
    step = np.atleast_1d((hi - lo) / (2 ** bits - 1)).astype(np.float32)
    step16 = step.astype(np.float16)
    low = step16.astype(np.float32) < step
    step16[low] = np.nextafter(step16[low], np.float16(np.inf))
    return step16


def quantize(w: np.ndarray, bits: int) -> QuantizedTensor:
    """Quantizes a float32 tensor; symbols are clipped to the 2^b levels that start at round(min/step)."""
    w = np.asarray(w, np.float32)
    steps = fp16_steps(w, bits)
    s = steps.astype(np.float32)
    safe = np.where(s > 0, s, 1.0)
    sym = np.rint(w / safe)
    axes = channel_axes(w.shape)
    lo = np.rint(np.minimum(w.min(axis=axes), 0.0) / safe) if w.size else 0
    sym = np.clip(sym, lo, lo + 2 ** bits - 1)
    sym = np.where(s > 0, sym, 0).astype(np.int32)
    return QuantizedTensor(sym, steps, bits)


def quantize_with_steps(w: np.ndarray, steps) -> QuantizedTensor:
    """Quantizes a tensor with given steps (per channel along the last axis, or one), rounded to float16
    first: the file stores float16 steps, and the symbols must be those the decoder's steps give back."""
    steps = np.asarray(steps, np.float32).astype(np.float16)
    sym = np.rint(np.asarray(w, np.float32) / steps.astype(np.float32)).astype(np.int32)
    return QuantizedTensor(sym, steps, bits_spanned(sym))


def dequantize(symbols: np.ndarray, steps: np.ndarray) -> np.ndarray:
    return (symbols.astype(np.float32) * steps.astype(np.float32)).astype(np.float32)


def fake_quantize(w: jnp.ndarray, bits: int) -> jnp.ndarray:
    """Straight-through quantization for training: forward = dequantize(quantize(w)), gradient = identity.

    Mirrors `quantize` in jnp (float16 steps rounded up, the same clipping) so that quantization-aware
    fine-tuning sees the weights the file will hold.
    """
    axes = channel_axes(w.shape)
    wc = jax.lax.stop_gradient(w)   # steps are statistics of the weights, not differentiated
    lo = jnp.minimum(wc.min(axis=axes), 0.0)
    hi = jnp.maximum(wc.max(axis=axes), 0.0)
    step = jnp.atleast_1d((hi - lo) / (2 ** bits - 1))
    step16 = step.astype(jnp.float16)
    step16 = jnp.where(step16.astype(jnp.float32) < step,
                       jnp.nextafter(step16, jnp.asarray(jnp.inf, jnp.float16)), step16)
    s = step16.astype(jnp.float32)
    safe = jnp.where(s > 0, s, 1.0)
    lo_sym = jnp.round(lo / safe)
    q = jnp.clip(jnp.round(w / safe), lo_sym, lo_sym + 2 ** bits - 1) * s
    return w + jax.lax.stop_gradient(q - w)


def bits_spanned(symbols: np.ndarray) -> int:
    """Bits b whose 2^b levels cover the symbols' range (1..16): the informational `bits` of a tensor
    quantized with given (e.g. learned) steps rather than at a chosen bit depth."""
    if symbols.size == 0:
        return 1
    span = int(symbols.max()) - int(symbols.min()) + 1
    return min(max(1, (span - 1).bit_length()), 16)
