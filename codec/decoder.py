"""Frames from decoded variables: one jitted forward pass per batch, compiled once per (config, batch size)."""

from __future__ import annotations

import collections
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from codec.metrics import Quality, mean_psnr, measure
from inr import registry
from inr.memory import check_program

TRACES: collections.Counter = collections.Counter()   # config -> times traced (tests assert 1)


def _render(config, variables, idx):
    TRACES[config] += 1   # runs at trace time only
    frames = registry.spec_of(config).render(config, variables, idx)
    return jnp.round(jnp.clip(frames, 0.0, 1.0) * 255.0).astype(jnp.uint8)


render_uint8 = jax.jit(_render, static_argnums=0)   # module level: one compile cache for the process


DEFAULT_BATCH = 2   # frames per forward pass wherever a file is decoded (player, `nerva decode`, reports): per-frame
# throughput barely grows with the batch on CPU (HNeRV 100k on carphone: 78 frames/s at 2, 87 at 8), while a
# seek waits for up to two batches (the one in flight, then its own)


def batch_frames(b: int, batch: int, t: int) -> np.ndarray:
    """The frame indices of aligned batch `b` ([b·batch, (b+1)·batch) ∩ [0, t)), padded to `batch` with the
    last one, so that one shape is ever compiled."""
    idx = np.arange(b * batch, min((b + 1) * batch, t))
    return np.concatenate([idx, np.full(batch - idx.size, idx[-1])]).astype(np.int32)


def decode_batch(config, variables, b: int, batch: int = DEFAULT_BATCH) -> np.ndarray:
    """Frames of aligned batch `b` (uint8, (n, H, W, 3), n < batch only for the last batch).

    Every frame is always rendered in the same batch (its aligned one, with the same companions), so a
    frame's pixels do not depend on the order or the range it was asked for in. They may depend on the batch
    size: XLA compiles each batch shape on its own, and a different summation order can round a rare value
    the other way (seen: 1 of 36,864 values off by one for NeRV++'s tiny config at batch 1 vs 2). Hence one
    DEFAULT_BATCH for the player, `nerva decode` and every report.
    """
    t = config.geometry.frames
    if not 0 <= b * batch < t:
        raise IndexError(f"batch {b} of {batch} frames lies outside the file's {t} frames")
    n = min(batch, t - b * batch)
    idx = jnp.asarray(batch_frames(b, batch, t))
    return np.asarray(_render_program(config, variables, batch)(variables, idx))[:n]


_COMPILED: collections.OrderedDict = collections.OrderedDict()   # (config, batch) -> compiled, newest last
_COMPILED_KEPT = 16


def _render_program(config, variables, batch: int):
    """render_uint8 compiled for `config` at `batch` frames (a config fixes its variables' shapes), its
    working memory checked before it first runs: a file whose frames this machine cannot render is refused
    with a clear message instead of failing to allocate."""
    key = (config, batch)
    if key not in _COMPILED:
        g = config.geometry
        compiled = render_uint8.lower(config, variables, jnp.zeros((batch,), jnp.int32)).compile()
        check_program(compiled, f"decoding {g.width}x{g.height} frames, {batch} at a time",
                      "decode fewer frames at a time" if batch > 1 else "this machine cannot decode this file")
        _COMPILED[key] = compiled
        if len(_COMPILED) > _COMPILED_KEPT:
            _COMPILED.popitem(last=False)
    _COMPILED.move_to_end(key)
    return _COMPILED[key]


def decode_frames(config, variables, indices=None, batch: int = DEFAULT_BATCH) -> np.ndarray:
    """Decodes frames (default: all) to uint8 through the aligned batches that hold them.

    Args:
      indices: frame indices, any order; None for 0..T-1.
      batch: frames per forward pass.
    Returns:
      (N, H, W, 3) uint8.
    """
    t = config.geometry.frames
    idx = np.arange(t) if indices is None else np.asarray(indices, np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= t):
        raise IndexError(f"frame indices must lie in [0, {t})")
    h, w = config.geometry.height, config.geometry.width
    out = np.zeros((idx.size, h, w, 3), np.uint8)
    for b in np.unique(idx // batch):
        where = np.flatnonzero(idx // batch == b)
        out[where] = decode_batch(config, variables, int(b), batch)[idx[where] - b * batch]
    return out


@dataclasses.dataclass(frozen=True)
class FileReport:
    """A .nerva file measured against its source: what every summary and result row reports."""

    bytes: int
    bpp: float            # 8 · bytes / (T·H·W): every byte of the file counts
    quality: Quality      # decoded frames vs the source frames (codec.metrics convention)
    decode_fps: float     # frames/s decoding every frame, compilation excluded
    config: object


def measure_file(path, source: np.ndarray, batch: int = DEFAULT_BATCH, priors=()) -> FileReport:
    """Decodes the file at `path` (not an encoder's in-memory copy) and measures it against `source`,
    one batch at a time: the decoded clip is never held. Each frame is measured on its own (codec.metrics'
    per-frame numbers do not depend on how many frames a call gets) and the video's numbers are their means,
    as `measure` of the whole clip gives them.

    Args:
      source: (T, H, W, 3) uint8, the frames the file was fitted to.
      priors: where else to look for the file's prior, if it has one (codec.assets.find).
    """
    from codec import api   # the decoder core stays importable without the container code
    data = api.read_file(path)
    config, variables = api.decompress(data, priors)
    g = config.geometry
    if source.shape != (g.frames, g.height, g.width, 3):
        raise ValueError(f"source frames {source.shape} do not match the file's {g.frames}x{g.height}x{g.width}")
    decode_batch(config, variables, 0, batch)   # compile, untimed
    seconds, frames = 0.0, []
    for b in range(-(-g.frames // batch)):
        t = time.perf_counter()
        decoded = decode_batch(config, variables, b, batch)
        seconds += time.perf_counter() - t
        frames += [measure(source[b * batch + i][None], frame[None]) for i, frame in enumerate(decoded)]
    quality = Quality(psnr=mean_psnr([q.psnr for q in frames]), psnr_y=mean_psnr([q.psnr_y for q in frames]),
                      ms_ssim=float(np.mean([q.ms_ssim for q in frames])), ms_ssim_scales=frames[0].ms_ssim_scales)
    return FileReport(len(data), 8 * len(data) / g.pixels, quality, g.frames / seconds, config)
