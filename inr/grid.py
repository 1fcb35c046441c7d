"""Upsampling plans: which strides take a small base grid to any frame size, and the padding the decoder crops."""

from __future__ import annotations

import dataclasses
import itertools
import math

from inr.errors import ConfigError

_STRIDES = (5, 4, 3, 2)   # per-stage upsampling factors the NeRV family uses
_MAX_STAGES = 6


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


def plan_strides(height: int, width: int, max_base_cells: int, max_pad: float = 0.15,
                 min_stages: int = 2) -> Plan:
    """Picks strides so that a base grid of at most `max_base_cells` cells upsamples to cover H×W.

    The decoder renders (base_h·S, base_w·S) and crops the bottom/right padding, so any frame size works
    (odd sizes too). Among plans whose padded area exceeds H·W by at most `max_pad`, it takes the least
    padding, then the largest base grid, then the most stages (more layers at the same budget), then the
    smallest first stride.
    NeRV (bunny 1280×720, 150 cells) gets 5,2,2,2,2 on a 9×16 grid, as in the paper; carphone 176×144 gets
    2,2,2,2 on 9×11.
    """
    best, best_key = None, None
    for n in range(min_stages, _MAX_STAGES + 1):
        for strides in itertools.combinations_with_replacement(_STRIDES, n):
            s = math.prod(strides)
            bh, bw = -(-height // s), -(-width // s)
            pad = bh * bw * s * s / (height * width) - 1.0
            if bh * bw > max_base_cells or pad > max_pad:
                continue
            key = (round(pad, 2), -bh * bw, -n, strides[0])
            if best_key is None or key < best_key:
                best, best_key = Plan(tuple(strides), bh, bw), key
    if best is None:
        raise ConfigError(f"no upsampling plan covers {width}x{height} with a base grid of at most "
                          f"{max_base_cells} cells; the frame is too small or too large")
    return best

