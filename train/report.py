"""A written .nerva file measured against its source batch by batch: the numbers of `nerva fit`'s summary."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from codec import api
from codec.decoder import DEFAULT_BATCH, FileReport, decode_batch
from codec.metrics import Quality, mean_psnr, measure


def measure_streaming(path: Path, source: np.ndarray, batch: int = DEFAULT_BATCH) -> FileReport:
    """codec.decoder.measure_file's report without ever holding the decoded clip: the file is decoded one
    batch at a time and each frame measured on its own. codec.metrics.measure's per-frame numbers do not
    depend on how many frames it is given, and the video's numbers are the same means of them, so the
    report is measure_file's bit for bit (tests/train/test_report.py).

    Args:
      source: (T, H, W, 3) uint8, the frames the file was fitted to.
    """
    data = api.read_file(path)
    config, variables = api.decompress(data)
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
