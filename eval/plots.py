"""Rate–distortion figures drawn from result rows only (PSNR and MS-SSIM against bpp)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # files only; notebooks call `figure` and display it themselves
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from eval.results import Row  # noqa: E402

_STYLE = {"x264": ":", "x265": "--", "av1": "-."}


def curves(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows grouped by codec, each group sorted by bpp."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[r.codec].append(r)
    return {k: sorted(v, key=lambda r: r.bpp) for k, v in sorted(groups.items())}


def figure(rows: list[Row], title: str = ""):
    """A two-panel figure: PSNR (dB) and MS-SSIM against bpp, one line per codec."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for codec, group in curves(rows).items():
        style = next((v for k, v in _STYLE.items() if codec.startswith(k)), "-")
        bpp = [r.bpp for r in group]
        axes[0].plot(bpp, [r.psnr for r in group], style, marker="o", ms=4, label=codec)
        axes[1].plot(bpp, [r.ms_ssim for r in group], style, marker="o", ms=4, label=codec)
    for ax, ylabel in zip(axes, ("PSNR (dB, RGB)", "MS-SSIM")):
        ax.set_xscale("log")
        # label 1, 2 and 5 of every decade as plain numbers (0.02, 0.05, 0.1, ...)
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("bits per pixel (file size)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save(rows: list[Row], stem: str | Path, title: str = "") -> list[Path]:
    """Writes `stem`.png and `stem`.svg; returns their paths. The same rows give the same bytes: the SVG
    has no date and fixed element ids, so re-running a finished sweep leaves committed plots unchanged."""
    with plt.rc_context({"svg.hashsalt": "nerva"}):
        fig = figure(rows, title)
        paths = [Path(f"{stem}.png"), Path(f"{stem}.svg")]
        fig.savefig(paths[0], dpi=120)
        fig.savefig(paths[1], metadata={"Date": None})
    plt.close(fig)
    return paths
