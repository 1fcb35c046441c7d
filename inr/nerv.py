"""NeRV (Chen et al., NeurIPS 2021): frame index -> positional encoding -> MLP stem -> conv+PixelShuffle blocks."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from inr import sizing
from inr.cam import CAMOption, frame_position
from inr.cam import CAM_LIMITS
from inr.config import ConfigBase, Geometry, Limit
from inr.grid import STAGE_LIMITS, check_stage_grid, plan_strides
from inr.layers import (ACTIVATIONS, MAX_CHANNELS, MAX_KERNEL, MAX_PE_LEVELS, Conv, Dense, UpBlock, activation,
                        check_positional_encoding, output_head, positional_encoding)
from inr.registry import ModelSpec, register

# The NeRV family's training preset, shared by NeRV, CAM, HNeRV and NeRV++ so that model comparisons at equal
# size are comparisons of architectures (NeRV and NeRV++'s references use Adam β1 0.5 and lr 5e-4 at batch 1
# for 300 epochs; 2e-3 and β1 0.9 at batch 2 measured better on carphone for NeRV at our 60-150 epochs).
FAMILY_PRESET = dict(size=100_000, lr=2e-3, beta1=0.9, epochs=150)

BASE_CELLS = 150   # NeRV's base grid is ~9×16 cells (bunny); the planner keeps it at most this big


def width_fields(geometry: Geometry, width: int) -> dict:
    """NeRV's sizing rule, shared by NeRV++: ~BASE_CELLS base grid, stem MLP 2·width wide, C1 = width,
    channels halving per stage down to 12."""
    plan = plan_strides(geometry.height, geometry.width, BASE_CELLS)
    chans = [width]
    for _ in plan.strides[1:]:
        chans.append(max(chans[-1] // 2, min(12, width)))
    return dict(strides=plan.strides, base_h=plan.base_h, base_w=plan.base_w, stem_width=max(16, 2 * width),
                stem_channels=width, channels=tuple(chans))


@dataclasses.dataclass(frozen=True)
class NeRVConfig(CAMOption, ConfigBase):
    """NeRV decoder. Presets: `for_size(geometry, n_params)`; `tiny()` for tests."""

    geometry: Geometry
    strides: tuple[int, ...]        # per-stage upsampling factors (from inr.grid.plan_strides)
    base_h: int                     # base grid rows; base_h·prod(strides) >= height (extra rows cropped)
    base_w: int                     # base grid columns
    stem_width: int                 # hidden width of the stem MLP (NeRV: 512 or 1024)
    stem_channels: int              # channels of the stem's base-grid output (NeRV's C1 in fc_hw_dim)
    channels: tuple[int, ...]       # output channels of each upsampling stage
    pe_base: float = 1.25           # positional encoding base b: sin/cos(t·b^i·π)
    pe_levels: int = 40             # positional encoding levels L (2L input features)
    kernel: int = 3                 # conv kernel of every stage
    act: str = "gelu"               # activation (NeRV code default; its README bunny runs use swish)
    cam_nodes: int = 0              # CAM temporal grid nodes per block (inr/cam.py); 0 = off
    cam_lr_mult: float = 10.0       # learning-rate multiplier of the CAM tables

    LIMITS = dict(STAGE_LIMITS, stem_width=Limit(1, MAX_CHANNELS), pe_base=Limit(1, 16),
                  pe_levels=Limit(1, MAX_PE_LEVELS), kernel=Limit(1, MAX_KERNEL), act=Limit(choices=tuple(ACTIVATIONS)),
                  **CAM_LIMITS)

    def __post_init__(self):
        self.check_limits()
        check_positional_encoding(type(self).__name__, self.pe_base, self.pe_levels)
        check_stage_grid(self)

    @classmethod
    def for_size(cls, geometry: Geometry, n_params: int, **overrides) -> "NeRVConfig":
        """The widest config (channels halve per stage down to 12) with at most `n_params` parameters,
        counted with `overrides` (other config fields, e.g. cam_nodes) applied."""
        return sizing.solve_width(lambda w: cls.with_width(geometry, w).replace(**overrides), n_params,
                                  count_params)

    @classmethod
    def with_width(cls, geometry: Geometry, width: int) -> "NeRVConfig":
        return cls(geometry, **width_fields(geometry, width))

    @classmethod
    def tiny(cls, geometry: Geometry | None = None) -> "NeRVConfig":
        return cls.with_width(geometry or Geometry.of(8, 32, 48), 8).replace(pe_levels=8)


class NeRV(nn.Module):
    config: NeRVConfig

    @nn.compact
    def __call__(self, idx: jnp.ndarray) -> jnp.ndarray:
        """idx (B,) int frame indices -> (B, H, W, 3) frames in [0, 1]."""
        c = self.config
        act = activation(c.act)
        t = idx.astype(jnp.float32) / c.geometry.frames   # t = idx / T, as in the reference
        x = positional_encoding(t, c.pe_base, c.pe_levels, interleave=True)
        x = act(Dense(c.stem_width, name="stem0")(x))
        # NeRV applies the activation after every stem layer, the last one included.
        x = act(Dense(c.base_h * c.base_w * c.stem_channels, name="stem1")(x))
        x = x.reshape(-1, c.base_h, c.base_w, c.stem_channels)
        pos = frame_position(idx, c.geometry.frames)
        for i, (ch, s) in enumerate(zip(c.channels, c.strides)):
            x = UpBlock(ch, s, c.kernel, c.act, c.cam_nodes, name=f"block{i}")(x, pos)
        x = output_head(Conv(3, 1, name="head")(x))
        return x[:, :c.geometry.height, :c.geometry.width, :]


def init(config: NeRVConfig, key: jax.Array):
    return {"params": NeRV(config).init(key, jnp.zeros((1,), jnp.int32))["params"]}


def render(config: NeRVConfig, variables, idx: jnp.ndarray) -> jnp.ndarray:
    return NeRV(config).apply({"params": variables["params"]}, idx)


def count_params(config) -> int:
    return sizing.count(init, config)


# --bpp under rate-distortion training sizes NeRV for these file bits per parameter (train.presets.Preset.
# rd_bits_per_param; 3 elsewhere): at low rates a larger model at fewer bits each wins. Measured on carphone
# (30 epochs, one fit each; file PSNR @ file bpp): 0.02 bpp, 20k parameters (3 bits) 23.30 dB @0.0195, 40k
# (1.5 bits) 23.84 dB @0.0197. From 0.1 up the 3 bits of the earlier sweeps hold: at 0.2 bpp 128k (4.5 bits)
# 28.08 dB @0.1959, 200k (3 bits) 28.51 @0.1927, 262k (2.2 bits) 28.59 @0.1960 (a wash with 3).
RD_BITS_PER_PARAM = ((0.02, 1.52), (0.1, 3.0))

SPEC = register(ModelSpec(
    name="nerv", model_id=1, config_cls=NeRVConfig, init=init, render=render,
    for_size=NeRVConfig.for_size, preset=dict(FAMILY_PRESET, rd_bits_per_param=RD_BITS_PER_PARAM),
    description="NeRV: positional encoding of t -> MLP -> conv/PixelShuffle blocks (baseline)"))


@dataclasses.dataclass(frozen=True)
class CAMConfig(NeRVConfig):
    """NeRV with coordinate-aware modulation on: a 30-node temporal grid per block (CAM's compression
    setting, `--mod-dim 30`). Same fields and header layout as NeRV; only the default differs."""

    cam_nodes: int = 30

    @classmethod
    def tiny(cls, geometry: Geometry | None = None) -> "CAMConfig":
        return super().tiny(geometry).replace(cam_nodes=4)


SPEC_CAM = register(ModelSpec(
    name="cam", model_id=4, config_cls=CAMConfig, init=init, render=render,
    for_size=CAMConfig.for_size, preset=FAMILY_PRESET,
    description="CAM: NeRV with coordinate-aware (temporal) modulation of every block"))
