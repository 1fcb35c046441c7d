"""Upsampling plans cover any frame size with bounded padding."""

import pytest

from inr.errors import ConfigError
from inr.grid import check_render, plan_strides


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


@pytest.mark.parametrize("h,w,cells,min_stages,expect", [
    # 2.35:1 on HNeRV's 12 cells: no plan pads <= 15 %; the least padding is a 2x4 grid, 17.6 % extra
    # (2·5·4·3·2·2·2 = 960 rows for 816, 4·480 = 1920 columns exactly: 960·1920 / (816·1920) = 1.176).
    (816, 1920, 12, 3, ((5, 4, 3, 2, 2, 2), 2, 4)),
    (136, 320, 12, 3, ((5, 2, 2, 2, 2), 2, 4)),   # 2·80 = 160 rows for 136, 4·80 = 320 columns
    (1, 1, 1, 2, ((2, 2), 1, 1)),                 # a tiny frame renders 4x4 and crops it
])
def test_sizes_with_no_modest_plan_take_the_least_padding(h, w, cells, min_stages, expect):
    p = plan_strides(h, w, cells, min_stages=min_stages)
    assert (p.strides, p.base_h, p.base_w) == expect


@pytest.mark.parametrize("h,w", [(1, 32768), (32768, 1), (4, 20000)])
def test_aspect_ratios_no_square_strides_cover_are_refused_by_name(h, w):
    # 1x32768 on 12 cells: a base row of at most 12 cells needs a stride product >= 32768/12, so at least
    # 2731 rendered rows for 1: far past 4x the frame's area.
    with pytest.raises(ConfigError, match="no upsampling plan .* aspect ratio is too extreme"):
        plan_strides(h, w, 12, min_stages=3)


def test_a_render_must_cover_the_frame_within_four_times_its_area_or_256x256():
    check_render("x", 200, 200, 200, 200)
    check_render("x", 200, 200, 400, 400)          # exactly 4·H·W (above 2^16)
    check_render("x", 1, 1, 256, 256)              # exactly 2^16 pixels for a tiny frame
    for h, w, out_h, out_w, why in [(200, 200, 199, 200, "does not cover"), (200, 200, 200, 199, "does not cover"),
                                    (200, 200, 401, 400, "more than"), (1, 1, 256, 257, "more than")]:
        with pytest.raises(ConfigError, match=why):
            check_render("x", h, w, out_h, out_w)
