"""Training presets sized for a 2-core CPU: each family states its own (`ModelSpec.preset`); this module
turns one into a schedule. Measured results on carphone are in bench/README.md (from bench/fit.py).
"""

from __future__ import annotations

import dataclasses

from inr import registry
from train.schedule import Phase, TrainConfig, standard


@dataclasses.dataclass(frozen=True)
class Preset:
    size: int          # default parameter budget when neither --size nor --bpp is given
    lr: float          # peak Adam learning rate
    beta1: float       # Adam β1 (the references use 0.5 for NeRV, 0.9 for HNeRV)
    epochs: float      # fitting epochs before the prune / QAT fine-tunes
    loss: str = "l2"


_FALLBACK = Preset(size=100_000, lr=1e-3, beta1=0.9, epochs=150)   # a family that states no preset


def preset(model: str) -> Preset:
    """The preset of a model string's family ('hnerv:cam_nodes=30' uses hnerv's)."""
    spec = registry.parse(model)[0]
    return _FALLBACK if spec.preset is None else Preset(**spec.preset)


def train_config(model: str, epochs: float | None = None, lr: float | None = None, prune: float = 0.0,
                 batch: int = 2, seed: int = 0, qat_epochs: float | None = None, config=None) -> TrainConfig:
    """The standard fit -> prune -> QAT schedule with `model`'s preset (lr, β1, loss, epochs) filled in.

    Families with their own schedule (`ModelSpec.schedule`, e.g. NIRVANA's phase per group of frames)
    build it from the sized `config` instead; `prune` does not apply to them.
    """
    p = preset(model)
    spec = registry.parse(model)[0]
    if spec.schedule is not None:
        if config is None:
            raise ValueError(f"{spec.name}'s schedule depends on its config; pass config=")
        phases = tuple(Phase(**kw) for kw in spec.schedule(config, epochs or p.epochs, lr or p.lr))
        return TrainConfig(phases, batch=batch, loss=p.loss, beta1=p.beta1, seed=seed)
    train = standard(epochs or p.epochs, lr=lr or p.lr, prune=prune, qat_epochs=qat_epochs, batch=batch,
                     seed=seed, loss=p.loss)
    return dataclasses.replace(train, beta1=p.beta1)
