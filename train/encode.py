"""Encoding is fitting: frames -> fitted model -> quantized tensors -> .nerva bytes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any

import numpy as np

from codec import api
from codec.api import QuantPolicy
from codec.bytesio import FormatError
from codec.entropy import SupportTooWide
from codec.params import flatten
from inr import registry, sizing
from inr.config import Geometry
from inr.errors import ConfigError, NervaError
from train import rd
from train.loop import FitResult, fit
from train.schedule import TrainConfig

def params_for_bpp(spec, geometry: Geometry, bpp: float, bits: int, bits_per_param: float | None = None) -> int:
    """Parameter budget that should give about `bpp` bits per pixel: the family's expected file bits per
    parameter at `bits` (ModelSpec.bits_per_param) or `bits_per_param`, only to size the model before
    fitting."""
    return int(bpp * geometry.pixels / (bits_per_param or spec.bits_per_param(bits)))


# A fit with a target bpp whose file misses it by more than LANDING_TOLERANCE (the controller lags the rate
# at the end of the fit, when the learning rate is low) scales every learned step by one factor, found by
# bisection on the real file's size, so that the file lands LANDING_AIM of the tolerance away from the target
# on the side it missed. The scaling moves the weights off the grid they were trained on, so it moves no
# further than it must: on carphone (NeRV 74k, 0.05 bpp) landing a file 6 % under the target exactly on it
# cost 0.28 dB, and weights trained straight through (most of the quantized epochs since train.schedule.
# RD_SHARES 0.1/0.3/0.6) are more sensitive still: NeRV++ at 0.043 bpp lost 0.22 dB to a factor of 0.9976,
# NeRV at 0.043 0.71 dB to 0.973. Shifting the rounding threshold instead (the same steps, values rounded
# towards or away from zero by an offset found the same way) costs more (carphone, one fit each, landed 6 %
# / 3 % either way): NeRV at 0.043 bpp 1.9–2.2 / 0.5–0.8 dB against 1.0–1.1 / 0.4–0.6 by scaling, NeRV++ at
# 0.093 1.3–2.3 / 0.55 against 0.6–0.8 / 0.4–0.5.
LANDING_TOLERANCE = 0.05   # what --bpp promises
LANDING_AIM = 0.8
LANDING_RANGE = (1 / 16, 16.0)   # the factor's search range
LANDING_ITERATIONS = 14          # bisection steps on log(factor): 14 narrow a 16x side to 0.02 %


def _landed(config, result: FitResult, policy: QuantPolicy, target_bits: float, first):
    """(quantized, file bytes, factor) of the fit's file with every rate-distortion step times the factor
    whose file is nearest the target's bits moved LANDING_AIM of the tolerance towards the file (1.0 where
    the file is within LANDING_TOLERANCE already).
    Coarser steps make fewer bits, so the file's size falls with the factor, but not smoothly: straight-through
    training leaves many weights on the rounding thresholds, so the size can jump by several percent as the
    factor leaves 1 (HNeRV on bigbuckbunny at 0.02 bpp: from 6.1 % under the target past the 4 % aimed at, with
    nothing tried in between). The search keeps, of the files it tried, one within the tolerance if any, the
    nearest to its aim among those."""
    def file_at(factor: float):
        steps = {p: np.asarray(s, np.float32) * np.float32(factor) for p, s in result.steps.items()}
        return rd.file_of(config, result.variables, result.aux, steps, policy)

    def outside(data: bytes) -> bool:
        return abs(8 * len(data) - target_bits) > LANDING_TOLERANCE * target_bits

    best = (*first, 1.0)
    if not outside(first[1]):
        return best
    side = 1.0 if 8 * len(first[1]) > target_bits else -1.0
    aim = target_bits * (1.0 + side * LANDING_TOLERANCE * LANDING_AIM)   # inside the nearer edge of the tolerance

    def miss(data: bytes) -> tuple[bool, float]:
        """(outside the tolerance, distance from the aim): tuples order files within the tolerance first."""
        return outside(data), abs(8 * len(data) - aim) / aim
    # the factor lies above 1 for a file too large, below it for one too small: factor 1 is `first`, tried
    lo, hi = (0.0, np.log(LANDING_RANGE[1])) if side > 0 else (np.log(LANDING_RANGE[0]), 0.0)
    for _ in range(LANDING_ITERATIONS):
        mid = (lo + hi) / 2
        quantized, data = file_at(float(np.exp(mid)))
        if miss(data) < miss(best[1]):
            best = (quantized, data, float(np.exp(mid)))
        if 8 * len(data) > aim:
            lo = mid     # too many bits: coarser steps
        else:
            hi = mid
    return best


class Diverged(NervaError):
    """The fit ended with non-finite weights: nothing worth writing or resuming."""


@dataclasses.dataclass
class Encoded:
    data: bytes                    # the complete .nerva file
    config: Any                    # the model config (also in the file's header)
    quantized: dict                # path -> QuantizedTensor, exactly what the file holds
    fit: FitResult


def run_id(config, train: TrainConfig, policy: QuantPolicy, frames: np.ndarray) -> str:
    """Identifies a run for resuming: model, schedule, policy and the frames' bytes."""
    h = hashlib.sha256(json.dumps([registry.spec_of(config).name, config.to_dict(), train.to_dict(),
                                   dataclasses.asdict(policy)], sort_keys=True).encode())
    h.update(np.ascontiguousarray(frames).reshape(-1))   # the buffer itself: no copy of the clip
    return h.hexdigest()[:16]


def make_config(model: str, geometry: Geometry, n_params: int | None = None, bpp: float | None = None,
                bits: int = 8, bits_per_param: float | None = None, defaults: dict | None = None):
    """The registered model's config for this video, sized by parameter count or by target bpp.

    `model` is a model string ('hnerv', or with config overrides 'hnerv:cam_nodes=30'; see
    inr.registry.parse); the overrides, over `defaults` (more config fields), take part in the sizing."""
    spec, overrides = registry.parse(model)
    overrides = {**(defaults or {}), **overrides}
    if (n_params is None) == (bpp is None):
        raise ConfigError("give exactly one of a model size and a target bpp")
    if bpp is not None:
        if bpp <= 0:
            raise ConfigError(f"--bpp must be positive, got {bpp}")
        n_params = params_for_bpp(spec, geometry, bpp, bits, bits_per_param)
        if n_params > sizing.MAX_PARAMS:
            raise ConfigError(f"--bpp {bpp} asks for {n_params:.3g} parameters on this video, more than the "
                              f"{sizing.MAX_PARAMS:,} any model is sized to; ask for a lower bpp")
    try:
        return spec.for_size(geometry, n_params, **overrides)
    except (ValueError, ConfigError) as e:   # a config constraint broken by an override, e.g. cam_nodes=-1
        raise ConfigError(f"{model}: {e}") from None


def check_finite(variables, aux=None) -> None:
    """Raises Diverged naming the first tensor that holds a NaN or an infinity."""
    for path, x in flatten({"variables": variables, "aux": aux or {}}):
        if not np.isfinite(np.asarray(x)).all():
            raise Diverged(f"the fit diverged (non-finite weights in {path}); try a lower --lr")


def encode(config, frames: np.ndarray, train: TrainConfig, policy: QuantPolicy, **fit_kwargs) -> Encoded:
    """Fits and compresses; `fit_kwargs` go to train.loop.fit (progress, checkpointer, stop).

    The bytes returned always read back as a .nerva file: Diverged is raised instead when the fitted
    weights are not all finite, or do not make a valid file (e.g. quantization steps beyond float16)."""
    result = fit(config, frames, train, policy, **fit_kwargs)
    check_finite(result.variables, result.aux)
    t = time.perf_counter()
    try:
        with np.errstate(over="ignore", invalid="ignore"):   # an overflow is reported below, in one line
            # a tensor trained against the LAPLACE rate estimate (train.rd) is coded with that model: the
            # file spends what training estimated and minimised
            quantized, data = rd.file_of(config, result.variables, result.aux, result.steps, policy)
            target = max((p.target_bpp for p in train.phases), default=0.0)
            if target and result.steps:
                quantized, data, result.step_scale = _landed(config, result, policy,
                                                             target * config.geometry.pixels, (quantized, data))
        api.decompress(data)
    except (FormatError, SupportTooWide) as e:
        raise Diverged(f"the fitted weights do not make a valid file ({e}); the fit probably diverged, "
                       "try a lower --lr") from None
    result.seconds += time.perf_counter() - t
    return Encoded(data, config, quantized, result)
