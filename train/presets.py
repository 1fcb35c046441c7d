"""Training presets sized for a 2-core CPU: each family states its own (`ModelSpec.preset`); this module
turns one into a schedule. Measured results on carphone are in bench/README.md (from bench/fit.py).
"""

from __future__ import annotations

import dataclasses
import math

from inr import registry
from train import rd
from train.encode import make_config
from train.schedule import RD_NOISE_SHARE, RD_SHARES, Phase, TrainConfig, standard


@dataclasses.dataclass(frozen=True)
class Preset:
    size: int          # parameter budget when neither --size nor a --bpp target sizes the model (--lambda, fixed bits)
    lr: float          # peak Adam learning rate
    beta1: float       # Adam β1 (the references use 0.5 for NeRV, 0.9 for HNeRV)
    epochs: float      # fitting epochs before the prune / QAT fine-tunes
    loss: str = "l2"
    # rate-distortion schedules: the float fit's share of the epochs as (target bpp, share) pairs: linear in
    # log bpp between them, held past the ends (one pair: that share at every rate), so that a fit at a fixed
    # λ (no target, bpp 0) takes the lowest rate's share
    rd_fit_share: tuple = ((0.1, RD_SHARES[0]),)
    # the noisy soft-rounding phase's share of the epochs the float fit leaves (the straight-through phase
    # takes the rest)
    rd_noise_share: float = RD_NOISE_SHARE
    # --bpp under rate-distortion training sizes the model for this many file bits per parameter, as
    # (target bpp, bits) pairs: linear in log-log between them, held past the ends; () is
    # train.rd.CONTROL_BITS_PER_PARAM at every rate
    rd_bits_per_param: tuple = ()


def preset(model: str) -> Preset:
    """The preset of a model string's family ('hnerv:cam_nodes=30' uses hnerv's)."""
    spec = registry.parse(model)[0]
    return Preset(**spec.preset)


def rd_bits_per_param(model: str, bpp: float) -> float:
    """File bits per parameter `model`'s rate-distortion fit is sized for at the target `bpp`."""
    table = preset(model).rd_bits_per_param
    return _along(table, bpp, log_values=True) if table else rd.CONTROL_BITS_PER_PARAM


def rd_config(model: str, geometry, bpp: float, n_params: int | None = None):
    """The model config of `model`'s rate-distortion fit at the target `bpp` on `geometry`: `n_params`
    parameters, or sized for its rd_bits_per_param, with the family's fields for that rate
    (ModelSpec.rd_fields) under the model string's own ('hnerv:embed_channels=8' wins)."""
    fields = registry.parse(model)[0].rd_fields(geometry, bpp)
    if n_params is not None:
        return make_config(model, geometry, n_params=n_params, defaults=fields)
    return make_config(model, geometry, bpp=bpp, bits_per_param=rd_bits_per_param(model, bpp), defaults=fields)


def rd_fit_share(model: str, bpp: float) -> float:
    """The float fit's share of `model`'s rate-distortion schedule at the target `bpp` (0: a fit at a fixed λ)."""
    return _along(preset(model).rd_fit_share, bpp, log_values=False)


def _along(table, bpp: float, log_values: bool) -> float:
    """The value of a (bpp, value) table at `bpp`: linear in log bpp (and in log value where `log_values`)
    between its points, held past its ends."""
    table = sorted(table)
    if bpp <= table[0][0]:
        return float(table[0][1])
    f, inv = (math.log, math.exp) if log_values else (float, float)
    for (b0, v0), (b1, v1) in zip(table, table[1:]):
        if bpp <= b1:
            t = math.log(bpp / b0) / math.log(b1 / b0)
            return float(inv(f(v0) + t * (f(v1) - f(v0))))
    return float(table[-1][1])


def train_config(model: str, epochs: float | None = None, lr: float | None = None, prune: float = 0.0,
                 batch: int = 2, seed: int = 0, qat_epochs: float | None = None, *, config,
                 rate_weight: float = 0.0, target_bpp: float = 0.0) -> TrainConfig:
    """The standard fit -> prune -> QAT schedule with `model`'s preset (lr, β1, loss, epochs) filled in, as
    the family's `ModelSpec.schedule` rewrites it for the sized `config` (NIRVANA: a phase per group of
    frames, which prunes nothing; its fit options are refused before this, train.cli.check_fit_options)."""
    p = preset(model)
    spec = registry.parse(model)[0]
    train = standard(epochs or p.epochs, lr=lr or p.lr, prune=prune, qat_epochs=qat_epochs, batch=batch,
                     seed=seed, loss=p.loss, rate_weight=rate_weight, target_bpp=target_bpp,
                     rd_fit_share=rd_fit_share(model, target_bpp), rd_noise_share=p.rd_noise_share)
    phases = family_phases(spec, config, train.phases, epochs or p.epochs, lr or p.lr)
    return dataclasses.replace(train, phases=phases, beta1=p.beta1)


def family_phases(spec, config, phases: tuple[Phase, ...], epochs: float, lr: float) -> tuple[Phase, ...]:
    """`phases` as the family runs them (ModelSpec.schedule: the same, or its own)."""
    rewritten = spec.schedule(config, [dataclasses.asdict(ph) for ph in phases], epochs, lr)
    return tuple(Phase(**kw) for kw in rewritten)
