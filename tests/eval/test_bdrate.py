"""eval/bdrate.py: published BD-rate examples reproduced, and the properties any BD metric must have."""

from __future__ import annotations

import numpy as np
import pytest

from eval import bdrate
from eval.bdrate import bd_psnr, bd_rate

METHODS = ("pchip", "cubic")

# A 4-point libx265 curve (kbit/s, PSNR dB) from the FAU-LMS `bjontegaard` README
# (https://github.com/FAU-LMS/bjontegaard, README.md "Usage"): realistic input for the properties.
RATE_A = [9487.76, 4593.60, 2486.44, 1358.24]
PSNR_A = [40.037, 38.615, 36.845, 34.851]
RATE_T = [9787.80, 4469.00, 2451.52, 1356.24]
PSNR_T = [40.121, 38.651, 36.970, 34.987]


def _split(points):
    """[(rate, quality), ...] → (rates, qualities)."""
    rates, qualities = zip(*points)
    return list(rates), list(qualities)


# --------------------------------------------------------------------------- #
# published examples
# --------------------------------------------------------------------------- #
JCTVC_E137 = [
    ([(108048.8736, 43.6471), (61279.976, 40.3953), (33905.6656, 37.247), (18883.6928, 34.2911)],
     [(108061.2784, 43.6768), (61299.9936, 40.4232), (33928.7472, 37.2761), (18910.912, 34.3147)],
     -0.465215420752807),
    ([(40433.8848, 37.5761), (7622.7456, 35.3756), (2394.488, 33.8977), (1017.6184, 32.0603)],
     [(40370.12, 37.5982), (7587.0024, 35.4025), (2390.0944, 33.9194), (1017.0984, 32.0822)],
     -1.8779823450567612),
]


@pytest.mark.parametrize("anchor, test, expected_percent", JCTVC_E137)
def test_pchip_bd_rate_reproduces_jctvc_e137_examples(anchor, test, expected_percent):
    """Two JCTVC-E137 curve pairs with their spreadsheet (PCHIP) BD-rates.

    Source: Netflix/vmaf, python/test/calculate_bd_rate_test.py, class CalculateBdRateJCTVCTest
    (also python/test/bd_rate_calculator_test.py), expected -0.00465215420752807 and
    -0.018779823450567612 as fractions, i.e. -0.4652 % and -1.8780 %. The Android CTS
    BdRateCalculatorTests cite the same data as "sourced from JCTVC E137"
    (phenix.it-sudparis.eu/jct/doc_end_user/documents/5_Geneva/wg11/JCTVC-E137-v1.zip).
    Acceptance is 0.1 % relative; we agree to ~1e-12.
    """
    got = bd_rate(*_split(anchor), *_split(test), method="pchip")
    assert got == pytest.approx(expected_percent, rel=1e-3)
    assert got == pytest.approx(expected_percent, abs=1e-9)


def test_cubic_bd_rate_reproduces_published_x264_vs_x265_example():
    """VCEG-M33 cubic BD-rate of a published x264/x265 pair on the 'evil' clip (rates in Mbit/s).

    Source: https://videonerd.website/how-compute-bd-rate ("How to compute BD-Rate?"), computed
    there with Anserw/Bjontegaard_metric's BD_RATE (np.polyfit degree 3, overlap interval),
    anchor = x265, test = x264: "-12.098". Published to 3 decimals; 0.1 % relative covers it.
    """
    x264 = ([9.525, 14.27, 19.113, 24.393], [37.73, 39.07, 40.07, 40.95])
    x265 = ([8.914, 13.330, 17.880, 22.990], [37.02, 38.37, 39.42, 40.35])
    got = bd_rate(*x265, *x264, method="cubic")
    assert got == pytest.approx(-12.098, rel=1e-3)
    assert got == pytest.approx(-12.098, abs=5e-4)   # the published rounding


def test_cubic_fit_reproduces_matlab_values_when_integrated_over_the_union_interval():
    """Our cubic fit agrees with the Matlab values that IENT/RDPlot tests against.

    Source: IENT/RDPlot, src/rdplot/tests/test_bd.py ("Ergebnisse mit Matlab vergleichen"):
    BD-rate -11.8353612757205 %, BD-PSNR 0.425738970169449 dB. Those numbers integrate the two
    cubics over the UNION of the curves' ranges (extrapolating), not over their overlap as
    VCEG-M33 and our public API do (which gives -11.503 % and 0.406 dB here); so we check the
    shared fitting core (`_mean`) on the union interval, to 1e-9.
    """
    anchor = _split([(937.0112, 45.5074), (1405.4792, 47.0002), (3438.7128, 49.9565), (6448.6368, 52.1459)])
    test = _split([(822.0064, 45.7215), (1608.9144, 47.6227), (3086.912, 50.1394), (5784.7696, 52.3339)])
    (a_logr, a_q), (t_logr, t_q) = (bdrate._curve(*c, "cubic", n) for c, n in ((anchor, "a"), (test, "t")))

    lo, hi = min(a_q.min(), t_q.min()), max(a_q.max(), t_q.max())
    d_log = bdrate._mean(t_q, t_logr, lo, hi, "cubic") - bdrate._mean(a_q, a_logr, lo, hi, "cubic")
    assert (10.0 ** d_log - 1.0) * 100.0 == pytest.approx(-11.8353612757205, abs=1e-9)

    lo, hi = min(a_logr.min(), t_logr.min()), max(a_logr.max(), t_logr.max())
    d_q = bdrate._mean(t_logr, t_q, lo, hi, "cubic") - bdrate._mean(a_logr, a_q, lo, hi, "cubic")
    assert d_q == pytest.approx(0.425738970169449, abs=1e-9)

    assert bd_rate(*anchor, *test, method="cubic") == pytest.approx(-11.50294279, abs=1e-6)


# --------------------------------------------------------------------------- #
# properties
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", METHODS)
def test_identical_curves_give_zero_bd_rate_and_zero_bd_psnr(method):
    assert bd_rate(RATE_A, PSNR_A, RATE_A, PSNR_A, method) == pytest.approx(0.0, abs=1e-12)
    assert bd_psnr(RATE_A, PSNR_A, RATE_A, PSNR_A, method) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [0.5, 0.9, 1.1, 3.0])
def test_rates_scaled_by_k_at_equal_quality_give_bd_rate_of_k_minus_one(method, k):
    scaled = [k * r for r in RATE_A]
    assert bd_rate(RATE_A, PSNR_A, scaled, PSNR_A, method) == pytest.approx((k - 1.0) * 100.0, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("d", [-0.7, 0.25, 1.5])
def test_uniform_quality_shift_at_equal_rates_gives_bd_psnr_of_the_shift(method, d):
    shifted = [q + d for q in PSNR_A]
    assert bd_psnr(RATE_A, PSNR_A, RATE_A, shifted, method) == pytest.approx(d, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [0.8, 1.25])
def test_swapping_anchor_and_test_inverts_the_rate_ratio_for_proportional_curves(method, k):
    scaled = [k * r for r in RATE_A]
    a = bd_rate(RATE_A, PSNR_A, scaled, PSNR_A, method) / 100.0
    b = bd_rate(scaled, PSNR_A, RATE_A, PSNR_A, method) / 100.0
    assert (1.0 + a) * (1.0 + b) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_swapping_anchor_and_test_inverts_the_rate_ratio_and_negates_bd_psnr_in_general(method):
    a = bd_rate(RATE_A, PSNR_A, RATE_T, PSNR_T, method) / 100.0
    b = bd_rate(RATE_T, PSNR_T, RATE_A, PSNR_A, method) / 100.0
    assert (1.0 + a) * (1.0 + b) == pytest.approx(1.0, abs=1e-12)
    assert bd_psnr(RATE_A, PSNR_A, RATE_T, PSNR_T, method) == pytest.approx(
        -bd_psnr(RATE_T, PSNR_T, RATE_A, PSNR_A, method), abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_better_test_curve_has_negative_bd_rate_and_positive_bd_psnr(method):
    """The test curve is above the anchor (more PSNR at about the same rates): it saves bits."""
    assert bd_rate(RATE_A, PSNR_A, RATE_T, PSNR_T, method) < 0
    assert bd_psnr(RATE_A, PSNR_A, RATE_T, PSNR_T, method) > 0


@pytest.mark.parametrize("method", METHODS)
def test_point_order_does_not_change_the_result(method):
    perm = [2, 0, 3, 1]
    shuffled = ([RATE_T[i] for i in perm], [PSNR_T[i] for i in perm])
    assert bd_rate(RATE_A, PSNR_A, *shuffled, method) == bd_rate(RATE_A, PSNR_A, RATE_T, PSNR_T, method)
    assert bd_psnr(RATE_A, PSNR_A, *shuffled, method) == bd_psnr(RATE_A, PSNR_A, RATE_T, PSNR_T, method)


@pytest.mark.parametrize("method", METHODS)
def test_the_rate_unit_cancels(method):
    """kbit/s vs bit/s (or bytes vs bpp): BD-rate is a ratio, BD-PSNR a quality difference."""
    to_bps = lambda rates: [1000.0 * r for r in rates]  # noqa: E731
    assert bd_rate(to_bps(RATE_A), PSNR_A, to_bps(RATE_T), PSNR_T, method) == pytest.approx(
        bd_rate(RATE_A, PSNR_A, RATE_T, PSNR_T, method), abs=1e-9)
    assert bd_psnr(to_bps(RATE_A), PSNR_A, to_bps(RATE_T), PSNR_T, method) == pytest.approx(
        bd_psnr(RATE_A, PSNR_A, RATE_T, PSNR_T, method), abs=1e-9)


def test_pchip_accepts_two_points_and_interpolates_linearly():
    assert bd_rate([1.0, 2.0], [30.0, 40.0], [2.0, 4.0], [30.0, 40.0]) == pytest.approx(100.0, abs=1e-9)
    # Quality linear in log10(rate) with slope 10 dB/decade; the test curve gains 1 dB at equal rate.
    assert bd_psnr([1.0, 10.0], [30.0, 40.0], [1.0, 10.0], [31.0, 41.0]) == pytest.approx(1.0, abs=1e-12)


def test_cubic_tolerates_non_monotonic_quality_as_vceg_m33_does():
    noisy_q = [40.037, 38.615, 36.845, 37.0]   # the lowest-rate point is above its neighbour
    assert np.isfinite(bd_rate(RATE_A, noisy_q, RATE_T, PSNR_T, method="cubic"))


# --------------------------------------------------------------------------- #
# invalid input
# --------------------------------------------------------------------------- #
INVALID = [
    pytest.param(dict(anchor_rate=[0.0, 4593.60, 2486.44, 1358.24]), "pchip",
                 "anchor: rates must be positive", id="zero-rate"),
    pytest.param(dict(test_rate=[9787.80, -4469.00, 2451.52, 1356.24]), "cubic",
                 "test: rates must be positive", id="negative-rate"),
    pytest.param(dict(anchor_rate=[1000.0], anchor_q=[35.0]), "pchip",
                 r"anchor: method='pchip' needs at least 2 points, got 1", id="pchip-one-point"),
    pytest.param(dict(test_rate=RATE_T[:3], test_q=PSNR_T[:3]), "cubic",
                 r"test: method='cubic' needs at least 4 points, got 3", id="cubic-three-points"),
    pytest.param(dict(test_q=[q + 10.0 for q in PSNR_T]), "pchip",
                 "curves do not overlap in quality", id="no-quality-overlap"),
    pytest.param(dict(anchor_q=[40.037, 38.615, 36.845, 37.0]), "pchip",
                 "anchor: quality must increase strictly with rate for method='pchip'", id="pchip-non-monotonic"),
    pytest.param(dict(anchor_rate=[9487.76, 4593.60, 4593.60, 1358.24]), "cubic",
                 "anchor: rates must be distinct", id="duplicate-rate"),
    pytest.param(dict(test_q=PSNR_T[:3]), "pchip",
                 "test: rate and quality must be 1-D of equal length", id="length-mismatch"),
    pytest.param(dict(anchor_q=[40.037, float("nan"), 36.845, 34.851]), "cubic",
                 "anchor: rates and qualities must be finite", id="nan-quality"),
    pytest.param(dict(), "akima", "unknown method 'akima'", id="unknown-method"),
]


@pytest.mark.parametrize("override, method, message", INVALID)
def test_invalid_curves_raise_value_error_saying_why(override, method, message):
    args = dict(anchor_rate=RATE_A, anchor_q=PSNR_A, test_rate=RATE_T, test_q=PSNR_T) | override
    with pytest.raises(ValueError, match=message):
        bd_rate(**args, method=method)


def test_bd_psnr_rejects_curves_that_do_not_overlap_in_rate():
    far = [100.0 * r for r in RATE_T]
    with pytest.raises(ValueError, match=r"curves do not overlap in log10\(rate\)"):
        bd_psnr(RATE_A, PSNR_A, far, PSNR_T)


def test_cubic_bd_rate_rejects_fewer_than_four_distinct_qualities():
    with pytest.raises(ValueError, match="anchor quality: method='cubic' needs at least 4 distinct values"):
        bd_rate(RATE_A, [40.037, 38.615, 38.615, 34.851], RATE_T, PSNR_T, method="cubic")


def test_bd_rate_text_formats_a_halved_rate_with_a_true_minus_and_says_why_there_is_none():
    rate, q = [0.1, 0.2, 0.4, 0.8], [30.0, 32.0, 34.0, 36.0]
    # the same qualities at half the rate everywhere: BD-rate exactly −50 % (hand computation)
    assert bdrate.bd_rate_text(rate, q, [r / 2 for r in rate], q) == "−50.0 %"
    assert bdrate.bd_rate_text(rate, q, [r * 2 for r in rate], q) == "+100.0 %"
    assert bdrate.bd_rate_text(rate, q, [0.1], [30.0]) == "—"
    assert bdrate.bd_rate_text(rate, q, [0.1, 0.2], [40.0, 41.0]) == "n/a"   # qualities that do not overlap
