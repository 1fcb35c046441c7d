"""Upsampling plans: which strides take a small base grid to any frame size, and the padding the decoder crops."""

from __future__ import annotations

import dataclasses
import itertools
import math

from inr.config import MAX_SIDE, Limit
from inr.errors import ConfigError
from inr.layers import MAX_CHANNELS

_STRIDES = (5, 4, 3, 2)   # per-stage upsampling factors the NeRV family uses
_MAX_STAGES = 6           # the most stages a plan has

# What a config (so a file header, codec/FORMAT.md §4.3) may hold, beyond what the planner picks: 1 to
# MAX_STAGES stages, each upsampling by 1 to MAX_STRIDE. Zero stages are refused: every family upsamples
# at least once (HNeRV's encoder needs a stage to reach its embedding channels), and the planner never
# plans fewer than two.
MAX_STAGES = 8
MAX_STRIDE = 8

# A decoder renders a padded grid and crops it to the frame. A plan, and any config a file holds, may
# render at most MAX_RENDER_RATIO times the frame's pixels, or MAX_RENDER_SMALL pixels (256×256) for a
# frame too small for that: the decoder's work and memory stay proportional to the frame, and tiny
# frames (1×1 included) still plan. Planned padding is far below it: over 32×32..3840×2160 at aspect
# ratios 1:3..3:1 (every size up to 259 rows, a 7×11 lattice above) at most 40 % more pixels on HNeRV's
# 12 base cells (51×41 renders 54×54) and 19 % on NeRV's 150 (33×33 renders 36×36); 2.35:1 widescreen
# pads 17.6 % on 12 cells. Only extreme aspect ratios, which square strides cannot cover with a few
# base cells, reach the limit and are refused.
MAX_RENDER_RATIO = 4
MAX_RENDER_SMALL = 2 ** 16


@dataclasses.dataclass(frozen=True)
class Plan:
    strides: tuple[int, ...]   # per-stage upsampling, first stage first (largest first, as in NeRV/HNeRV)
    base_h: int                # base grid rows; base_h * prod(strides) >= frame height
    base_w: int                # base grid columns

    @property
    def total_stride(self) -> int:
        return math.prod(self.strides)

    @property
    def out_h(self) -> int:
        return self.base_h * self.total_stride

    @property
    def out_w(self) -> int:
        return self.base_w * self.total_stride


def max_render_pixels(height: int, width: int) -> int:
    """The most pixels a decoder may render (before cropping) for an H×W frame."""
    return max(MAX_RENDER_RATIO * height * width, MAX_RENDER_SMALL)


def check_render(where: str, height: int, width: int, out_h: int, out_w: int) -> None:
    """Raises ConfigError unless an out_h×out_w render covers H×W within `max_render_pixels`."""
    if out_h < height or out_w < width:
        raise ConfigError(f"{where}: the decoder renders {out_w}x{out_h}, which does not cover the "
                          f"{width}x{height} frame (base·∏strides must be >= the frame size)")
    if out_h * out_w > max_render_pixels(height, width):
        raise ConfigError(f"{where}: the decoder renders {out_w}x{out_h}, more than the limit of "
                          f"max({MAX_RENDER_RATIO}·H·W, {MAX_RENDER_SMALL}) pixels for a {width}x{height} frame")


# Field limits of the base grid and stages, shared by NeRV, NeRV++ and HNeRV (codec/FORMAT.md §4.3).
STAGE_LIMITS = dict(strides=Limit(1, MAX_STRIDE, min_len=1, max_len=MAX_STAGES), base_h=Limit(1, MAX_SIDE),
                    base_w=Limit(1, MAX_SIDE), stem_channels=Limit(1, MAX_CHANNELS),
                    channels=Limit(1, MAX_CHANNELS, min_len=1, max_len=MAX_STAGES))


def check_stage_grid(config) -> None:
    """One channel count per stage, and a base grid whose upsampled render covers the frame in bounds."""
    if len(config.channels) != len(config.strides):
        raise ConfigError(f"{type(config).__name__}: channels and strides need one entry per stage, got "
                          f"{len(config.channels)} and {len(config.strides)}")
    s = math.prod(config.strides)
    check_render(type(config).__name__, config.geometry.height, config.geometry.width, config.base_h * s,
                 config.base_w * s)


def plan_strides(height: int, width: int, max_base_cells: int, max_pad: float = 0.15,
                 min_stages: int = 2) -> Plan:
    """Picks strides so that a base grid of at most `max_base_cells` cells upsamples to cover H×W.

    The decoder renders (base_h·S, base_w·S) and crops the bottom/right padding, so any frame size works
    (odd sizes too). It prefers plans whose padded area exceeds H·W by at most `max_pad`; among them it
    takes the least padding, then the largest base grid, then the most stages (more layers at the same
    budget), then the smallest first stride. When no plan pads that little (a 2.35:1 frame on HNeRV's
    12 cells: 1920×816 pads 18 % at best), the same order picks the least padding of all, up to
    `max_render_pixels`.
    NeRV (bunny 1280×720, 150 cells) gets 5,2,2,2,2 on a 9×16 grid, as in the paper; carphone 176×144 gets
    2,2,2,2 on 9×11.
    """
    best, best_key = None, None
    limit = max_render_pixels(height, width)
    for n in range(min_stages, _MAX_STAGES + 1):
        for strides in itertools.combinations_with_replacement(_STRIDES, n):
            s = math.prod(strides)
            bh, bw = -(-height // s), -(-width // s)
            pad = bh * bw * s * s / (height * width) - 1.0
            if bh * bw > max_base_cells or bh * bw * s * s > limit:
                continue
            key = (pad > max_pad, round(pad, 2), -bh * bw, -n, strides[0])
            if best_key is None or key < best_key:
                best, best_key = Plan(tuple(strides), bh, bw), key
    if best is None:
        raise ConfigError(f"no upsampling plan covers {width}x{height} with a base grid of at most "
                          f"{max_base_cells} cells while rendering at most max({MAX_RENDER_RATIO}·H·W, "
                          f"{MAX_RENDER_SMALL}) pixels: the aspect ratio is too extreme")
    return best
