"""Upsampling plans cover any frame size with bounded padding."""

import pytest

from inr.errors import ConfigError
from inr.grid import plan_strides


@pytest.mark.parametrize("h,w,cells,expect", [
    (720, 1280, 150, ((5, 2, 2, 2, 2), 9, 16)),     # NeRV's bunny plan
    (144, 176, 150, ((2, 2, 2, 2), 9, 11)),         # carphone, no padding
    (144, 176, 12, ((3, 2, 2, 2, 2), 3, 4)),        # HNeRV-style small base grid
])
def test_known_sizes_get_the_reference_plans(h, w, cells, expect):
    p = plan_strides(h, w, cells)
    assert (p.strides, p.base_h, p.base_w) == expect


@pytest.mark.parametrize("h,w", [(35, 33), (144, 176), (180, 320), (97, 211), (1080, 1920)])
@pytest.mark.parametrize("cells", [12, 150])
def test_plans_cover_the_frame_with_little_padding(h, w, cells):
    p = plan_strides(h, w, cells)
    assert p.out_h >= h and p.out_w >= w
    assert p.base_h * p.base_w <= cells
    assert p.out_h * p.out_w <= 1.15 * h * w + 1e-9


def test_tiny_frames_have_no_plan():
    with pytest.raises(ConfigError, match="no upsampling plan"):
        plan_strides(2, 2, 1)

