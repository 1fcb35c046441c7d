"""Per-model training presets sized for this CPU, and the demo preset.

Each preset is (lr, beta1, batch, epochs). Expected results on carphone are in bench/README.md.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Preset:
    lr: float          # peak Adam learning rate
    beta1: float       # Adam β1 (NeRV: 0.5, HNeRV: 0.9)
    epochs: float      # fitting epochs before the prune / QAT fine-tunes
    loss: str = "l2"


PRESETS = {
    "nerv": Preset(lr=2e-3, beta1=0.9, epochs=150),
    "hnerv": Preset(lr=2e-3, beta1=0.9, epochs=150),
}

DEMO_MODEL = "hnerv"
DEMO_SIZE = 150_000      # parameters: fits carphone in a few minutes on 2 CPU cores
DEMO_EPOCHS = 150


def preset(model: str) -> Preset:
    return PRESETS.get(model, Preset(lr=1e-3, beta1=0.9, epochs=150))
