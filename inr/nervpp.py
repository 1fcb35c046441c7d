"""NeRV++ (Ghorbel & Hamidouche, 2024): NeRV with a gated MLP stem and upsampling blocks sandwiched
between a gated depthwise-conv block and a separable residual block, plus a bilinear skip per stage.

Follows the released code (`models/model_best.py`, digest in shared/research §4.2); where this differs
from it or the reference is silent:
- The gated block is MambaOut's GatedCNNBlock (LayerNorm -> Linear C->2h -> split (g, i, c) -> depthwise
  5x5 on c -> Linear(GELU(g) * [i, c]) + input, h = int(8/3 C)). Its LayerNorm has no affine parameters
  here: the Linear right after it absorbs any per-channel scale and shift exactly, so they would only
  add stored parameters (and a scale near 1 quantizes badly with a range that contains 0).
- The separable residual block's hidden width is C (the digest gives no expansion).
- Bilinear skip: jax.image.resize "linear" (half-pixel centres, PyTorch's align_corners=False).
- Channel rule, base grid and stem width as our NeRV (`NeRVConfig.with_width`): at equal parameter
  budgets (`for_size`) the two are compared at equal size, as the paper sizes NeRV++ to NeRV-S/M/L.
- Exact GELU in the gated and residual blocks, tanh GELU in the stem (as the reference), swish after
  the PixelShuffle (the reference's README commands).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from inr import sizing
from inr.cam import CAM_LIMITS, CAMOption, frame_position
from inr.config import ConfigBase, Geometry, Limit
from inr.grid import STAGE_LIMITS, check_stage_grid
from inr.layers import (ACTIVATIONS, MAX_CHANNELS, MAX_KERNEL, MAX_PE_LEVELS, Conv, Dense, UpBlock, activation,
                        check_positional_encoding, gelu, output_head, positional_encoding)
from inr.nerv import FAMILY_PRESET, width_fields
from inr.registry import ModelSpec, register


@dataclasses.dataclass(frozen=True)
class NeRVPPConfig(CAMOption, ConfigBase):
    """NeRV++ decoder. Presets: `for_size(geometry, n_params)`; `tiny()` for tests."""

    geometry: Geometry
    strides: tuple[int, ...]        # per-stage upsampling factors (from inr.grid.plan_strides)
    base_h: int                     # base grid rows; base_h·prod(strides) >= height (extra rows cropped)
    base_w: int                     # base grid columns
    stem_width: int                 # hidden width h of the gated stem (fc1: 2L -> 2h)
    stem_channels: int              # channels of the stem's base-grid output (C1)
    channels: tuple[int, ...]       # output channels of each stage
    pe_base: float = 1.25           # positional encoding base b: sin/cos(t·b^i·π), interleaved
    pe_levels: int = 40             # positional encoding levels L (2L input features)
    act: str = "swish"              # activation after each PixelShuffle
    gate_expansion: float = 8 / 3   # gated block hidden width = int(gate_expansion · C)
    gate_kernel: int = 5            # depthwise kernel of the gated block
    cam_nodes: int = 0              # CAM temporal grid nodes per block (inr/cam.py); 0 = off
    cam_lr_mult: float = 10.0       # learning-rate multiplier of the CAM tables

    LIMITS = dict(STAGE_LIMITS, stem_width=Limit(1, MAX_CHANNELS), pe_base=Limit(1, 16),
                  pe_levels=Limit(1, MAX_PE_LEVELS), act=Limit(choices=tuple(ACTIVATIONS)),
                  gate_expansion=Limit(1, 16), gate_kernel=Limit(1, MAX_KERNEL, odd=True), **CAM_LIMITS)

    def __post_init__(self):
        self.check_limits()
        check_positional_encoding(type(self).__name__, self.pe_base, self.pe_levels)
        check_stage_grid(self)

    @classmethod
    def for_size(cls, geometry: Geometry, n_params: int, **overrides) -> "NeRVPPConfig":
        """The widest config with at most `n_params` parameters, `overrides` applied."""
        return sizing.solve_width(lambda w: cls.with_width(geometry, w).replace(**overrides), n_params,
                                  count_params)

    @classmethod
    def with_width(cls, geometry: Geometry, width: int) -> "NeRVPPConfig":
        return cls(geometry, **width_fields(geometry, width))   # NeRV's sizing rule: equal-size comparisons

    @classmethod
    def tiny(cls, geometry: Geometry | None = None) -> "NeRVPPConfig":
        return cls.with_width(geometry or Geometry.of(8, 32, 48), 8).replace(pe_levels=8)


class GatedCNNBlock(nn.Module):
    """LayerNorm (no affine) -> Linear C -> 2h -> (g, i, c) -> depthwise k×k on c -> Linear(GELU(g)·[i, c]) + x."""

    expansion: float
    kernel: int

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        hidden = int(self.expansion * c)
        y = nn.LayerNorm(epsilon=1e-6, use_scale=False, use_bias=False)(x)
        y = Dense(2 * hidden, weight_init="trunc_normal", name="fc1")(y)
        g, i, conv_in = jnp.split(y, [hidden, 2 * hidden - c], axis=-1)
        conv_out = Conv(c, self.kernel, groups=c, weight_init="xavier", name="dw")(conv_in)
        return x + Dense(c, weight_init="trunc_normal", name="fc2")(gelu(g) * jnp.concatenate([i, conv_out], -1))


class SeparableResidual(nn.Module):
    """NeRV++'s SCRB: depthwise 3×3 -> 1×1 -> GELU -> 1×1, plus the input."""

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        y = Conv(c, 3, groups=c, weight_init="xavier", name="dw")(x)
        y = gelu(Conv(c, 1, weight_init="xavier", name="pw1")(y))
        return x + Conv(c, 1, weight_init="xavier", name="pw2")(y)


class Stage(nn.Module):
    """1×1 projection -> gated block -> NeRV upsampling block (+CAM) -> separable residual, + bilinear skip."""

    config: "NeRVPPConfig"
    features: int
    stride: int

    @nn.compact
    def __call__(self, x, pos):
        c = self.config
        x = Conv(self.features, 1, weight_init="xavier", name="proj")(x)
        b, h, w, ch = x.shape
        skip = jax.image.resize(x, (b, h * self.stride, w * self.stride, ch), "linear")
        x = GatedCNNBlock(c.gate_expansion, c.gate_kernel, name="gated")(x)
        x = UpBlock(self.features, self.stride, 3, c.act, c.cam_nodes, weight_init="xavier", name="up")(x, pos)
        return SeparableResidual(name="scrb")(x) + skip


class NeRVPP(nn.Module):
    config: NeRVPPConfig

    @nn.compact
    def __call__(self, idx: jnp.ndarray) -> jnp.ndarray:
        """idx (B,) int frame indices -> (B, H, W, 3) frames in [0, 1]."""
        c = self.config
        t = idx.astype(jnp.float32) / c.geometry.frames   # t = idx / T, as NeRV
        x = positional_encoding(t, c.pe_base, c.pe_levels, interleave=True)
        # Gated MLP stem: fc2(x · GELU_tanh(z)), no activation after fc2 (as the reference).
        x, z = jnp.split(Dense(2 * c.stem_width, weight_init="trunc_normal", name="stem0")(x), 2, axis=-1)
        x = Dense(c.base_h * c.base_w * c.stem_channels, weight_init="trunc_normal", name="stem1")(
            x * activation("gelu_tanh")(z))
        x = x.reshape(-1, c.base_h, c.base_w, c.stem_channels)
        pos = frame_position(idx, c.geometry.frames)
        for i, (ch, s) in enumerate(zip(c.channels, c.strides)):
            x = Stage(c, ch, s, name=f"block{i}")(x, pos)
        x = output_head(Conv(3, 1, weight_init="xavier", name="head")(x))
        return x[:, :c.geometry.height, :c.geometry.width, :]


def init(config: NeRVPPConfig, key: jax.Array):
    return {"params": NeRVPP(config).init(key, jnp.zeros((1,), jnp.int32))["params"]}


def render(config: NeRVPPConfig, variables, idx: jnp.ndarray) -> jnp.ndarray:
    return NeRVPP(config).apply({"params": variables["params"]}, idx)


def count_params(config) -> int:
    return sizing.count(init, config)


# --bpp under rate-distortion training sizes NeRV++ for these file bits per parameter (train.presets.Preset.
# rd_bits_per_param). Measured on carphone (30 epochs, one fit each; file PSNR @ file bpp): 0.043 bpp, 43k
# parameters (3 bits) 26.05 dB @0.0422, 72k (1.8 bits) 26.49 dB @0.0421; 0.093 bpp, 84k (3 bits) 27.99 dB
# @0.0925, 65k (4 bits) 27.80 dB @0.0937; 0.02 bpp, 45k (1.3 bits) 24.59 dB @0.0198 against 24.74 at 1.8;
# 0.2 bpp, 101k (6 bits) 28.64 dB @0.1960, 130k (4.5 bits) 28.92 @0.2040, 3 bits 29.38 @0.1947, 276k (2.2
# bits) 29.40 @0.1973 (a wash with 3).
RD_BITS_PER_PARAM = ((0.043, 1.82), (0.093, 3.0))

SPEC = register(ModelSpec(
    name="nervpp", model_id=3, config_cls=NeRVPPConfig, init=init, render=render,
    for_size=NeRVPPConfig.for_size, preset=dict(FAMILY_PRESET, rd_bits_per_param=RD_BITS_PER_PARAM),
    description="NeRV++: gated MLP stem, gated depthwise + separable residual blocks around each upsampling"))
