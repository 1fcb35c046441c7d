"""Bjøntegaard delta rate (BD-rate, %) and delta PSNR (BD-PSNR, dB) between two rate–quality curves.

A curve is a list of points (rate, quality): rate in any positive unit (kbit/s, bytes, bpp — the same
unit for anchor and test; BD-rate is a ratio, so the unit cancels), quality in any unit where higher
is better and more rate buys more quality (PSNR or MS-SSIM in dB, VMAF, ...).

Two interpolation methods:

- ``"cubic"``: G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves",
  VCEG-M33, 2001 — one least-squares cubic polynomial per curve (exact through 4 points).
  Needs at least 4 points with distinct values on the fitted axis; quality need not be monotonic.
- ``"pchip"`` (default): piecewise cubic Hermite interpolation, as in the JCT-VC / JVET common test
  conditions spreadsheets (JCTVC-L1100, JVET-T2010). Needs at least 2 points and quality strictly
  increasing with rate (PCHIP interpolates log-rate as a function of quality, which must be
  single-valued). For such monotonic data, scipy's end-point slopes equal the spreadsheet's.

Both integrate over the interval where the two curves overlap, never extrapolating (some Matlab
ports integrate over the union instead, which can shift BD-rate by tenths of a point). Both are
independent of the logarithm's base; we use log10 as the documents do.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

METHODS = ("pchip", "cubic")
MIN_POINTS = {"pchip": 2, "cubic": 4}   # cubic: 4 coefficients; pchip: one linear piece


def bd_rate(anchor_rate: Sequence[float], anchor_q: Sequence[float],
            test_rate: Sequence[float], test_q: Sequence[float], method: str = "pchip") -> float:
    """Average rate difference of test vs anchor at equal quality, in percent.

    Negative means the test codec needs fewer bits for the same quality. log10(rate) is
    interpolated as a function of quality and averaged over the overlapping quality interval;
    the result is ``(10**(mean_test - mean_anchor) - 1) * 100``. Points may come in any order.
    Raises ValueError for invalid curves (see ``_curve``) or quality intervals that do not overlap.
    """
    a_logr, a_q = _curve(anchor_rate, anchor_q, method, "anchor")
    t_logr, t_q = _curve(test_rate, test_q, method, "test")
    _require_distinct(a_q, method, "anchor quality")
    _require_distinct(t_q, method, "test quality")
    lo, hi = _overlap(a_q, t_q, "quality")
    diff = _mean(t_q, t_logr, lo, hi, method) - _mean(a_q, a_logr, lo, hi, method)
    return float((10.0 ** diff - 1.0) * 100.0)


def bd_rate_text(anchor_rate: Sequence[float], anchor_q: Sequence[float],
                 test_rate: Sequence[float], test_q: Sequence[float]) -> str:
    """`bd_rate` as a table cell: "−12.3 %" (a true minus sign), "—" where a curve has fewer than two points,
    "n/a" where the curves do not overlap or cannot be interpolated (bd_rate's ValueError)."""
    if len(anchor_rate) < 2 or len(test_rate) < 2:
        return "—"
    try:
        value = bd_rate(anchor_rate, anchor_q, test_rate, test_q)
    except ValueError:
        return "n/a"
    return percent_text(value)


def percent_text(value: float) -> str:
    """A signed percentage as a table cell: "−12.3 %", "+0.4 %" (a true minus sign)."""
    return f"{value:+.1f} %".replace("-", "−")


def bd_psnr(anchor_rate: Sequence[float], anchor_q: Sequence[float],
            test_rate: Sequence[float], test_q: Sequence[float], method: str = "pchip") -> float:
    """Average quality difference of test vs anchor at equal rate (dB when quality is PSNR).

    Positive means the test codec gives higher quality for the same rate. Quality is
    interpolated as a function of log10(rate) and averaged over the overlapping log-rate
    interval. Points may come in any order. Raises ValueError as ``bd_rate`` does.
    """
    a_logr, a_q = _curve(anchor_rate, anchor_q, method, "anchor")
    t_logr, t_q = _curve(test_rate, test_q, method, "test")
    lo, hi = _overlap(a_logr, t_logr, "log10(rate)")
    return float(_mean(t_logr, t_q, lo, hi, method) - _mean(a_logr, a_q, lo, hi, method))


def _curve(rate, quality, method: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one curve; return (log10 rate, quality), both (N,) float64, sorted by rate.

    Checks: known method, 1-D equal lengths, finite values, rates > 0, at least
    ``MIN_POINTS[method]`` points, distinct rates, and for pchip quality strictly increasing
    with rate. Each failure raises ValueError naming the curve.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.ndim != 1 or q.shape != r.shape:
        raise ValueError(f"{name}: rate and quality must be 1-D of equal length, "
                         f"got shapes {r.shape} and {q.shape}")
    if r.size < MIN_POINTS[method]:
        raise ValueError(f"{name}: method={method!r} needs at least {MIN_POINTS[method]} points, "
                         f"got {r.size}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))):
        raise ValueError(f"{name}: rates and qualities must be finite")
    if np.any(r <= 0):
        raise ValueError(f"{name}: rates must be positive, got {r.tolist()}")
    order = np.argsort(r, kind="stable")
    r, q = r[order], q[order]
    if np.any(np.diff(r) == 0):
        raise ValueError(f"{name}: rates must be distinct, got {r.tolist()}")
    if method == "pchip" and np.any(np.diff(q) <= 0):
        raise ValueError(f"{name}: quality must increase strictly with rate for method='pchip' "
                         f"(sorted by rate: {q.tolist()}); use method='cubic' for noisy curves")
    return np.log10(r), q


def _require_distinct(x: np.ndarray, method: str, name: str) -> None:
    """Raise ValueError unless the cubic fit over ``x`` has 4 distinct abscissae to determine it."""
    if method == "cubic" and np.unique(x).size < MIN_POINTS["cubic"]:
        raise ValueError(f"{name}: method='cubic' needs at least 4 distinct values, got {x.tolist()}")


def _overlap(a: np.ndarray, b: np.ndarray, axis: str) -> tuple[float, float]:
    """The common interval [lo, hi] of two curves along one axis; ValueError if empty or a point."""
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if not hi > lo:
        raise ValueError(f"curves do not overlap in {axis}: anchor spans [{a.min():.6g}, "
                         f"{a.max():.6g}], test spans [{b.min():.6g}, {b.max():.6g}]")
    return float(lo), float(hi)


def _mean(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: str) -> float:
    """Mean over [lo, hi] of the curve y(x) interpolated by ``method``; x is (N,), y is (N,)."""
    if method == "pchip":   # x is increasing: log-rate sorted and distinct, quality validated
        return float(PchipInterpolator(x, y).integrate(lo, hi) / (hi - lo))
    # Fit in a centred, scaled variable u so the cubic's coefficients stay O(1) for PSNR ~ 40 dB;
    # the fitted function of x, and so its mean, is the same as VCEG-M33's polyfit on x directly.
    centre, scale = x.mean(), np.ptp(x) / 2.0
    antiderivative = np.polyint(np.polyfit((x - centre) / scale, y, 3))
    u_lo, u_hi = (lo - centre) / scale, (hi - centre) / scale
    return float((np.polyval(antiderivative, u_hi) - np.polyval(antiderivative, u_lo)) / (u_hi - u_lo))
