"""Per-model training presets sized for a 2-core CPU, and the demo preset.

Measured results of these presets on carphone are in bench/README.md (from bench/fit.py).
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


# The NeRV family shares one recipe so that model comparisons at equal size are comparisons of
# architectures (NeRV and NeRV++'s references use Adam β1 0.5 and lr 5e-4 at batch 1 for 300 epochs;
# 2e-3 and β1 0.9 at batch 2 measured better on carphone for NeRV at our 60-150 epochs).
PRESETS = {
    "nerv": Preset(size=100_000, lr=2e-3, beta1=0.9, epochs=150),
    "hnerv": Preset(size=100_000, lr=2e-3, beta1=0.9, epochs=150),
    "nervpp": Preset(size=100_000, lr=2e-3, beta1=0.9, epochs=150),
    "cam": Preset(size=100_000, lr=2e-3, beta1=0.9, epochs=150),
    # NIRVANA's small per-group SIRENs: group 0 at 3e-2, later groups at its warm_lr (0.5×) of it
    # (carphone, inr/nirvana.py); size = all groups.
    "nirvana": Preset(size=300_000, lr=3e-2, beta1=0.9, epochs=120),
}
_FALLBACK = Preset(size=100_000, lr=1e-3, beta1=0.9, epochs=150)

# `nerva demo`: the bundled carphone clip, fitted end to end within a few minutes on 2 CPU cores.
# NeRV, because at equal wall time it beats HNeRV on this CPU (bench/fit.py on carphone at 100k
# parameters: NeRV 150 epochs 32.05 dB at 0.268 bpp in 327 s, training 63 frames/s, decoding 150 frames/s;
# HNeRV 60 epochs 30.44 dB at 0.243 bpp in 365 s, 23 and 90 frames/s): XLA:CPU runs HNeRV's 5×5
# convolutions on few channels at a small fraction of peak. 120 epochs leave room for a slower machine.
DEMO_MODEL = "nerv"
DEMO_EPOCHS = 120


def preset(model: str) -> Preset:
    """The preset of a model string's family ('hnerv:cam_nodes=30' uses hnerv's)."""
    return PRESETS.get(model.partition(":")[0].strip(), _FALLBACK)


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
