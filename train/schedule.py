"""The training schedule as data: phases (fit, prune, quantization-aware fine-tune) run by one generic loop."""

from __future__ import annotations

import dataclasses

from inr.config import ConfigBase


@dataclasses.dataclass(frozen=True)
class Phase(ConfigBase):
    """One stretch of optimisation with fixed settings.

    A phase with `use_encoder` trains the family's encode-time encoder (HNeRV) jointly; the first phase
    without it starts by storing the encoder's embeddings (`ModelSpec.finalize`). A phase with
    `sparsity > 0` starts by pruning to that global sparsity; the masks then stay for every later phase.
    A phase with `quantize` runs the forward pass on straight-through-rounded weights at the file's bits
    (families with their own quantizer, `ModelSpec.quantize`, round inside their `train_render`).

    Families that fit in pieces (NIRVANA: one phase per group of frames) restrict a phase to a frame
    range, to the tensors it may change, and add their estimated rate to the loss; such a phase may end
    as soon as a step reaches `target_psnr` on its batch (a whole group of frames per step for NIRVANA,
    so the step's PSNR is the group's PSNR as the file will hold it), skipping its remaining steps.
    """

    name: str                    # shown in the progress bar: "fit", "prune", "qat"
    epochs: float                # passes over the frames (steps = ceil(epochs · T / batch))
    lr: float                    # peak learning rate
    warmup: float = 0.0          # fraction of the phase spent warming up linearly from 0.1·lr
    use_encoder: bool = False    # train the encoder (families with `init_aux`) in this phase
    sparsity: float = 0.0        # prune to this fraction of zero weights at the phase start
    quantize: bool = False       # quantization-aware: straight-through rounding at the policy's bits
    frames: tuple[int, ...] = ()  # (start, stop): train and evaluate on these frames only; () = all
    train_only: str = ""         # regex over 'variables/...' and 'aux/...' paths that may change; "" = all
    rate_weight: float = 0.0     # λ: loss = distortion + λ · estimated bits / (pixels of the phase's frames)
    batch: int = 0               # frames per step in this phase; 0 = TrainConfig.batch
    target_psnr: float = 0.0     # end the phase at the first step whose batch PSNR (dB) reaches this; 0 = off
    rd: str = ""                 # rate-distortion training (train.rd): "noise" (annealed soft rounding and
                                 # noise) or "ste" (rounding) on learned steps, the rate at `rate_weight`
    target_bpp: float = 0.0      # > 0: λ follows this file bpp (train.rd.Control) in a straight-through phase
                                 # (a noisy one holds it), starting at `rate_weight` (0: from the fit's
                                 # distortion) and carried over from a previous such phase

    def __post_init__(self):
        if self.rd not in ("", "noise", "ste"):
            raise ValueError(f"phase {self.name!r}: rd must be '', 'noise' or 'ste', not {self.rd!r}")
        if self.target_bpp and not self.rd:
            raise ValueError(f"phase {self.name!r}: a target bpp needs a rate-distortion phase (rd)")

    def batch_size(self, train_batch: int, n_frames: int) -> int:
        start, stop = self.frame_range(n_frames)
        return min(self.batch or train_batch, stop - start)

    def frame_range(self, n_frames: int) -> tuple[int, int]:
        return (self.frames[0], self.frames[1]) if self.frames else (0, n_frames)


@dataclasses.dataclass(frozen=True)
class TrainConfig(ConfigBase):
    """Everything the loop needs besides the model config and the frames."""

    phases: tuple[Phase, ...]
    batch: int = 2               # frames per step (HNeRV: 2, NeRV: 1)
    loss: str = "l2"             # "l2" (MSE) or "fusion6" (0.7·L1 + 0.3·(1 − SSIM), NeRV's default)
    beta1: float = 0.9           # Adam β1 (NeRV uses 0.5, HNeRV 0.9)
    beta2: float = 0.999
    clip_norm: float = 1.0       # global gradient-norm clip (guards the PSNR collapses NeRV-family code shows)
    seed: int = 0                # the one seed of a run: init, shuffling and noise derive from it

    @property
    def total_epochs(self) -> float:
        return sum(p.epochs for p in self.phases)


# Rate-distortion schedule (train.rd): shares of the epochs for the float fit, the noisy soft-rounding phase
# and the straight-through phase, and their learning rates relative to the fit's. The shares split the
# epochs the fixed-bit schedule spends (fit + QAT), so both pipelines train for the same number of epochs.
# A family's preset may give the float fit another share (Preset.rd_fit_share: HNeRV trains its encoder only
# in the float fit, and its embeddings are stored from it, see inr/hnerv.py); the noisy and the
# straight-through phase split what it leaves in the ratio of their shares here, or as the preset's
# rd_noise_share says (HNeRV's shorter noisy phase, inr/hnerv.py).
# At our short schedules most of the quantized epochs go to the straight-through phase, at the fit's full
# learning rate: the noisy phase trains the weights under noise of a whole step (Kumaraswamy a → 1 is
# uniform noise), which the rounded model never sees, and on the coarse steps of 1.5–3 bits per parameter
# that is a different network. Measured on carphone (NeRV, --bpp, 30 + 3 epochs, one fit each, file PSNR @
# file bpp): shares 0.1/0.8/0.1 at learning rates 1/1/0.1 (the earlier schedule): 23.88 @0.0194, 25.67
# @0.0417, 27.06 @0.0904, 28.56 @0.1934; the straight-through phase at 0.3 or 1 of the fit's rate: 0.02 bpp
# 24.07 / 24.30, 0.09 — / 27.26, 0.2 28.62 / 28.52 @0.2014; shares 0.1/0.3/0.6 at 1/1/1 (with the controller's
# gain 0.06, train.rd.CONTROL_GAIN): 26.71 @0.0414, 29.17 @0.1927. Shares 0.1/0.05/0.85 reach about the same
# before landing (0.02: 24.43, 0.09: 27.87 dB), so a short noisy phase stays. The straight-through phase
# warms up over its first tenth: started at its full rate with a fresh optimizer, HNeRV at 0.2 bpp lost 18 %
# of its rate in its first 100 steps and ended over 4 % under the target (the bpp controller could not bring it
# back as the learning rate fell); warmed up it landed (28.72 dB @0.1923) and NeRV did not change (0.043:
# 26.74 @0.0414, 0.2: 29.29 @0.1928).
RD_SHARES = (0.1, 0.3, 0.6)
RD_NOISE_SHARE = RD_SHARES[1] / (RD_SHARES[1] + RD_SHARES[2])   # the noisy phase's share of the quantized epochs
RD_LR = (1.0, 1.0, 1.0)
RD_STE_WARMUP = 0.1


def standard(epochs: float, lr: float = 1e-3, prune: float = 0.0, qat_epochs: float | None = None,
             batch: int = 2, seed: int = 0, use_encoder: bool = True, loss: str = "l2",
             rate_weight: float = 0.0, target_bpp: float = 0.0,
             rd_fit_share: float = RD_SHARES[0], rd_noise_share: float = RD_NOISE_SHARE) -> TrainConfig:
    """fit (10% warmup + cosine) -> optional prune fine-tune -> quantization-aware fine-tune.

    Fine-tuning phases get a tenth of the fit's epochs each (at least one) and a lower learning rate.
    With a `rate_weight` λ > 0 or a `target_bpp` the schedule is rate-distortion instead (loss = distortion
    + λ · estimated bits per pixel, λ fixed or following the target): the fit's and the QAT's epochs split by
    RD_SHARES into a float fit, a noisy soft-rounding phase on learned steps and a straight-through phase,
    with the prune fine-tune (if any) after the fit; `rd_fit_share` is the float fit's share, and the noisy
    phase takes `rd_noise_share` of the rest (RD_SHARES' ratio by default), the straight-through phase the
    remainder.
    """
    tune = max(1.0, round(epochs / 10)) if qat_epochs is None else qat_epochs
    rate_aware = rate_weight > 0 or target_bpp > 0
    total = epochs + tune
    if not 0.0 < rd_fit_share < 1.0:
        raise ValueError(f"rd_fit_share must be in (0, 1), got {rd_fit_share}")
    if not 0.0 < rd_noise_share < 1.0:
        raise ValueError(f"rd_noise_share must be in (0, 1), got {rd_noise_share}")
    fit_epochs = total * rd_fit_share if rate_aware else epochs
    phases = [Phase("fit", fit_epochs, lr, warmup=0.1, use_encoder=use_encoder)]
    if prune > 0:
        phases.append(Phase("prune", tune, lr * 0.2, warmup=0.0, sparsity=prune))
    if rate_aware:
        rate = dict(rate_weight=rate_weight, target_bpp=target_bpp)
        quantized = total * (1.0 - rd_fit_share)   # the noisy and straight-through phases
        phases += [Phase("rd", quantized * rd_noise_share, lr * RD_LR[1], rd="noise", **rate),
                   Phase("ste", quantized * (1.0 - rd_noise_share), lr * RD_LR[2], warmup=RD_STE_WARMUP,
                         rd="ste", **rate)]
    elif tune > 0:
        phases.append(Phase("qat", tune, lr * 0.1, warmup=0.0, quantize=True))
    return TrainConfig(tuple(phases), batch=batch, loss=loss, seed=seed)
