"""Frames from decoded variables: one jitted forward pass per batch, compiled once per (config, batch size)."""

from __future__ import annotations

import collections
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from codec.metrics import Quality, measure
from inr import registry

TRACES: collections.Counter = collections.Counter()   # config -> times traced (tests assert 1)


def _render(config, variables, idx):
    TRACES[config] += 1   # runs at trace time only
    frames = registry.spec_of(config).render(config, variables, idx)
    return jnp.round(jnp.clip(frames, 0.0, 1.0) * 255.0).astype(jnp.uint8)


render_uint8 = jax.jit(_render, static_argnums=0)   # module level: one compile cache for the process


def decode_frames(config, variables, indices=None, batch: int = 8) -> np.ndarray:
    """Decodes frames (default: all) to uint8.

    Args:
      indices: frame indices, any order; None for 0..T-1.
      batch: frames per forward pass; the last batch is padded so no second shape is ever compiled.
    Returns:
      (N, H, W, 3) uint8.
    """
    t = config.geometry.frames
    idx = np.arange(t) if indices is None else np.asarray(indices, np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= t):
        raise IndexError(f"frame indices must lie in [0, {t})")
    out = []
    for i in range(0, idx.size, batch):
        chunk = idx[i:i + batch]
        padded = np.concatenate([chunk, np.full(batch - chunk.size, chunk[-1])]).astype(np.int32)
        out.append(np.asarray(render_uint8(config, variables, jnp.asarray(padded)))[:chunk.size])
    h, w = config.geometry.height, config.geometry.width
    return np.concatenate(out) if out else np.zeros((0, h, w, 3), np.uint8)


@dataclasses.dataclass(frozen=True)
class FileReport:
    """A .nerva file measured against its source: what every summary and result row reports."""

    bytes: int
    bpp: float            # 8 · bytes / (T·H·W): every byte of the file counts
    quality: Quality      # decoded frames vs the source frames (codec.metrics convention)
    decode_fps: float     # frames/s decoding every frame, compilation excluded
    config: object


def measure_file(path, source: np.ndarray, batch: int = 8) -> FileReport:
    """Decodes the file at `path` (not an encoder's in-memory copy) and measures it against `source`.

    Args:
      source: (T, H, W, 3) uint8, the frames the file was fitted to.
    """
    from codec import api   # the decoder core stays importable without the container code
    data = api.read_file(path)
    config, variables = api.decompress(data)
    decode_frames(config, variables, batch=batch)          # compile
    t = time.perf_counter()
    decoded = decode_frames(config, variables, batch=batch)
    fps = decoded.shape[0] / (time.perf_counter() - t)
    return FileReport(len(data), 8 * len(data) / config.geometry.pixels, measure(source, decoded), fps,
                      config)
