"""HNeRV (Chen et al., CVPR 2023): a ConvNeXt encoder makes a tiny per-frame embedding; the decoder upsamples it."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from inr import sizing
from inr.cam import CAM_LIMITS, CAMOption, frame_position
from inr.config import MAX_SIDE, ConfigBase, Geometry, Limit
from inr.errors import ConfigError
from inr.grid import MAX_STAGES, MAX_STRIDE, STAGE_LIMITS, check_stage_grid, plan_strides
from inr.nerv import FAMILY_PRESET
from inr.layers import ACTIVATIONS, MAX_CHANNELS, MAX_KERNEL, Conv, UpBlock, activation, gelu, output_head
from inr.registry import ModelSpec, register

BASE_CELLS = 12          # HNeRV's decoder starts from a small grid (bunny 640×1280: 2×4)
LOWER_WIDTH = 12         # --lower_width
REDUCE = 1.2             # --reduce: each stage has round(C_in / 1.2) channels


@dataclasses.dataclass(frozen=True)
class HNeRVConfig(CAMOption, ConfigBase):
    """HNeRV decoder + encode-time encoder. Presets: `for_size(geometry, n_params)`; `tiny()` for tests.

    The stored embedding of frame t is (embed_h, embed_w, embed_channels); the decoder's 1×1 stem maps
    each embedding cell to a (base_h/embed_h)×(base_w/embed_w) block of stem_channels features.
    """

    geometry: Geometry
    strides: tuple[int, ...]        # decoder upsampling per stage (the encoder downsamples by the same)
    base_h: int                     # decoder base grid rows (padded frame height / prod(strides))
    base_w: int                     # decoder base grid columns
    embed_h: int                    # embedding grid rows, divides base_h
    embed_w: int                    # embedding grid columns, divides base_w
    embed_channels: int             # channels per embedding cell (HNeRV: 16)
    stem_channels: int              # C1: channels of the base grid after the 1×1 stem
    channels: tuple[int, ...]       # output channels of each upsampling stage
    kernels: tuple[int, ...]        # kernel of each stage: 1, 3, 5, 5, ... (--ks 0_1_5)
    enc_strides: tuple[int, ...]    # encoder downsampling per stage; product = prod(strides)
    enc_dim: int = 32               # ConvNeXt encoder width (encode time only, not stored; HNeRV: 64)
    act: str = "gelu"               # exact erf GELU, as PyTorch's nn.GELU
    cam_nodes: int = 0              # CAM temporal grid nodes per block (inr/cam.py); 0 = off
    cam_lr_mult: float = 10.0       # learning-rate multiplier of the CAM tables

    # The embedding grid is at most the base grid (it divides it); an encoder stage merges up to two
    # decoder stages (encoder_strides), so it has at most MAX_STAGES stages of at most MAX_STRIDE² each.
    LIMITS = dict(STAGE_LIMITS, embed_h=Limit(1, MAX_SIDE), embed_w=Limit(1, MAX_SIDE),
                  embed_channels=Limit(1, MAX_CHANNELS), kernels=Limit(1, MAX_KERNEL, min_len=1, max_len=MAX_STAGES),
                  enc_strides=Limit(1, MAX_STRIDE ** 2, min_len=1, max_len=MAX_STAGES),
                  enc_dim=Limit(1, MAX_CHANNELS), act=Limit(choices=tuple(ACTIVATIONS)), **CAM_LIMITS)

    def __post_init__(self):
        self.check_limits()
        name = type(self).__name__
        if len(self.kernels) != len(self.strides):
            raise ConfigError(f"{name}: kernels and strides need one entry per stage, got {len(self.kernels)} "
                              f"and {len(self.strides)}")
        check_stage_grid(self)
        if self.base_h % self.embed_h or self.base_w % self.embed_w:
            raise ConfigError(f"{name}: the embedding grid {self.embed_h}x{self.embed_w} must divide the base "
                              f"grid {self.base_h}x{self.base_w}")
        if _prod(self.enc_strides) != _prod(self.strides):
            raise ConfigError(f"{name}: encoder and decoder strides must have the same product, got "
                              f"{_prod(self.enc_strides)} and {_prod(self.strides)}")

    @classmethod
    def for_size(cls, geometry: Geometry, n_params: int, reduce: float = REDUCE, lower_width: int = LOWER_WIDTH,
                 **overrides) -> "HNeRVConfig":
        """Widest C1 whose decoder + all embeddings fit `n_params` (the reference counts embeddings too),
        counted with `overrides` (other config fields, e.g. cam_nodes) applied; `reduce` and `lower_width`
        shape the stage widths (with_width)."""
        return sizing.solve_width(lambda w: cls.with_width(geometry, w, reduce=reduce, lower_width=lower_width)
                                  .replace(**overrides), n_params, count_params)

    @classmethod
    def with_width(cls, geometry: Geometry, width: int, embed_channels: int = 16, reduce: float = REDUCE,
                   lower_width: int = LOWER_WIDTH) -> "HNeRVConfig":
        """C1 = `width`; each stage has round(C_in / `reduce`) channels, at least min(`lower_width`, width)."""
        if reduce < 1 or lower_width < 1:
            raise ConfigError(f"HNeRV widths need reduce >= 1 and lower_width >= 1, got {reduce} and {lower_width}")
        # As in the reference (encoder and decoder strides multiply to the same factor), the embedding
        # grid is the decoder's base grid: carphone gets 3×4×16 values per frame. A 1×1 grid (16 values)
        # measured 5 dB worse at the same parameter count (carphone, 100k, 40 epochs: 24.0 vs 29.1 dB).
        plan = plan_strides(geometry.height, geometry.width, BASE_CELLS, min_stages=3)
        chans, kernels = [], []
        c_in = width
        for i, _ in enumerate(plan.strides):
            c_in = max(round(c_in / reduce), min(lower_width, width))
            chans.append(c_in)
            kernels.append(min(1 + 2 * i, 5))
        return cls(geometry, plan.strides, plan.base_h, plan.base_w, plan.base_h, plan.base_w, embed_channels, width,
                   tuple(chans), tuple(kernels), encoder_strides(plan.strides))

    @classmethod
    def tiny(cls, geometry: Geometry | None = None) -> "HNeRVConfig":
        return cls.with_width(geometry or Geometry.of(8, 32, 48), 8, embed_channels=4).replace(enc_dim=8)

    @property
    def padded_hw(self) -> tuple[int, int]:
        s = _prod(self.strides)
        return self.base_h * s, self.base_w * s


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


def encoder_strides(strides: tuple[int, ...]) -> tuple[int, ...]:
    """Decoder strides merged pairwise from the first stage on: (3, 2, 2, 2, 2) -> (6, 4, 2).

    HNeRV's encoder mirrors the decoder with 5 ConvNeXt stages. On CPU the full-resolution stages cost
    more than the whole decoder (XLA:CPU's grouped 7×7 conv gradient is slow: 47 ms per fwd+bwd on
    (2, 48, 64, 32), more than a dense conv), so the encoder takes fewer, larger steps to the same base
    grid. Carphone at 150k parameters: 8.4 -> 18.8 training frames/s. The encoder is not stored, so
    this changes encode time only.
    """
    return tuple(_prod(strides[i:i + 2]) for i in range(0, len(strides), 2))


class Decoder(nn.Module):
    config: HNeRVConfig

    @nn.compact
    def __call__(self, emb: jnp.ndarray, idx: jnp.ndarray) -> jnp.ndarray:
        """emb (B, embed_h, embed_w, embed_channels), idx (B,) -> frames (B, H, W, 3) in [0, 1].

        The frame index is read only by CAM's temporal modulation (cam_nodes > 0)."""
        c = self.config
        fh, fw = c.base_h // c.embed_h, c.base_w // c.embed_w
        x = activation(c.act)(Conv(c.stem_channels * fh * fw, 1, name="stem")(emb))
        b = x.shape[0]
        x = x.reshape(b, c.embed_h, c.embed_w, fh, fw, c.stem_channels)
        x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, c.base_h, c.base_w, c.stem_channels)
        pos = frame_position(idx, c.geometry.frames)
        for i, (ch, s, k) in enumerate(zip(c.channels, c.strides, c.kernels)):
            x = UpBlock(ch, s, k, c.act, c.cam_nodes, name=f"block{i}")(x, pos)
        x = output_head(Conv(3, 3, name="head")(x))
        return x[:, :c.geometry.height, :c.geometry.width, :]


class ConvNeXtBlock(nn.Module):
    """Depthwise 7×7 -> LayerNorm -> Linear 4× -> GELU -> Linear -> layer scale (1e-6) -> residual."""

    dim: int

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.truncated_normal(0.02)
        y = nn.Conv(self.dim, (7, 7), padding="SAME", feature_group_count=self.dim, kernel_init=init)(x)
        y = nn.LayerNorm(epsilon=1e-6)(y)
        y = gelu(nn.Dense(4 * self.dim, kernel_init=init)(y))
        y = nn.Dense(self.dim, kernel_init=init)(y)
        gamma = self.param("gamma", nn.initializers.constant(1e-6), (self.dim,))
        return x + gamma * y


class Encoder(nn.Module):
    """ConvNeXt encoder (encode time only): padded frames -> per-frame embedding grid."""

    config: HNeRVConfig

    @nn.compact
    def __call__(self, frames: jnp.ndarray) -> jnp.ndarray:
        """frames (B, H, W, 3) in [0, 1] -> (B, embed_h, embed_w, embed_channels)."""
        c = self.config
        ph, pw = c.padded_hw
        x = jnp.pad(frames, ((0, 0), (0, ph - frames.shape[1]), (0, pw - frames.shape[2]), (0, 0)),
                    mode="edge")
        init = nn.initializers.truncated_normal(0.02)
        n = len(c.enc_strides)
        for i, s in enumerate(c.enc_strides):
            dim = c.embed_channels if i == n - 1 else c.enc_dim
            if i > 0:
                x = nn.LayerNorm(epsilon=1e-6)(x)
            x = nn.Conv(dim, (s, s), strides=(s, s), padding="VALID", kernel_init=init)(x)
            if i == 0:
                x = nn.LayerNorm(epsilon=1e-6)(x)
            x = ConvNeXtBlock(dim)(x)
        fh, fw = c.base_h // c.embed_h, c.base_w // c.embed_w
        b = x.shape[0]
        # Average the base grid down to the embedding grid (the identity when they are equal).
        x = x.reshape(b, c.embed_h, fh, c.embed_w, fw, c.embed_channels)
        return x.mean(axis=(2, 4))


def init(config: HNeRVConfig, key: jax.Array):
    c = config
    emb = jnp.zeros((1, c.embed_h, c.embed_w, c.embed_channels), jnp.float32)
    params = Decoder(c).init(key, emb, jnp.zeros((1,), jnp.int32))["params"]
    latents = {"embedding": jnp.zeros((c.geometry.frames,) + emb.shape[1:], jnp.float32)}
    return {"params": params, "latents": latents}


def render(config: HNeRVConfig, variables, idx: jnp.ndarray) -> jnp.ndarray:
    emb = variables["latents"]["embedding"][idx]
    return Decoder(config).apply({"params": variables["params"]}, emb, idx)


def init_aux(config: HNeRVConfig, key: jax.Array):
    h, w = config.geometry.height, config.geometry.width
    return Encoder(config).init(key, jnp.zeros((1, h, w, 3), jnp.float32))["params"]


def train_render(config: HNeRVConfig, variables, aux, idx, frames):
    """Encode-time path: the embedding comes from the encoder applied to the batch's own frames."""
    emb = Encoder(config).apply({"params": aux}, frames)
    return Decoder(config).apply({"params": variables["params"]}, emb, idx)


def finalize(config: HNeRVConfig, variables, aux, frames, batch: int = 16):
    """Stores the encoder's embedding of every frame (frames: (T, H, W, 3) uint8); drops the encoder."""
    enc = jax.jit(lambda p, f: Encoder(config).apply({"params": p}, f.astype(jnp.float32) / 255.0))
    embs = [enc(aux, jnp.asarray(frames[i:i + batch])) for i in range(0, frames.shape[0], batch)]
    return {**variables, "latents": {"embedding": jnp.concatenate(embs, axis=0)}}


# The float fit's share of a rate-distortion schedule (train.schedule.RD_SHARES; NeRV's 0.1 elsewhere), by
# target bpp (train.presets.Preset.rd_fit_share). The encoder trains only in the float fit, whose embeddings
# become the stored latents, so a short fit leaves them poor. Measured on carphone (~90k parameters, --bpp 0.09,
# 30 + 3 epochs, one run each): share 0.1: 25.18 dB at 0.0910 bpp, 0.25: 25.50 dB at 0.0920, 0.4: 26.33 dB at
# 0.0918, 0.5: 26.62 dB at 0.0918, 0.7: 25.84 dB at 0.0882 (fit + 6-bit QAT at 45k parameters: 25.63 dB at
# 0.0894). NeRV and CAM lose at 0.4 (NeRV 27.01 → 26.55 dB, CAM 27.92 → 27.63 dB), so it is this family's own.
# Sized by RD_BITS_PER_PARAM (below) the noisy phase pays less at high rates, where the steps are fine:
# carphone 0.043 bpp (71.5k): 0.5: 24.63 dB, 0.7: 23.99; 0.1 (113.6k): 0.5: 27.02 @0.103, 0.7: 27.12 @0.1005;
# 0.2 (112.6k): 0.5: 27.87 @0.196, 0.7: 28.17, 0.85: 28.13 @0.1946; bigbuckbunny 320×180 0.2 (281.6k): 0.5:
# 27.90 @0.1956, 0.7: 28.14 @0.1929. A lower learning rate for the noisy phase (0.3 of the fit's instead of
# 1) lost at 0.2 on carphone: 26.94 dB (share 0.5), 27.85 (0.7). Training the encoder through the noisy
# phase too (its output standing in for the batch's stored embeddings, their rate priced from it) did not
# pay, so the encoder stays in the float fit: carphone, the schedule of 0.1/0.8/0.1 then, share by this
# table: 0.09 bpp 26.75 dB @0.0934 (encoder in the float fit only: 26.88 @0.0964), 0.2 27.65 @0.1935
# (28.17 @0.1945); share 0.1 with the encoder through the noisy phase: 26.31 @0.0894, 27.41 @0.1960.
RD_FIT_SHARE = ((0.043, 0.5), (0.2, 0.7))
# Of the epochs the float fit leaves, the noisy phase takes a sixth (train.presets.Preset.rd_noise_share; a
# third elsewhere, train.schedule.RD_SHARES) and the straight-through phase the rest: HNeRV's float fit is
# long, so its noisy phase mostly trains under noise the rounded model never sees. Measured on bigbuckbunny
# 320×180 (30 + 3 epochs, one fit each, file PSNR @ file bpp; a third -> a sixth): 0.043 bpp 25.92 dB @0.0414
# -> 26.01 @0.0411, 0.093 27.64 @0.0894 -> 27.77 @0.0905.
RD_NOISE_SHARE = 1 / 6
# --bpp under rate-distortion training sizes HNeRV for these file bits per parameter (train.presets.Preset.
# rd_bits_per_param): its best size grows much more slowly than its rate. Measured on carphone (30 + 3 epochs,
# one fit each; file PSNR @ file bpp; share 0.7 unless said): 0.02: 28k 20.62 dB, 45k 21.42, 60k 21.15;
# 0.043: 45k 23.47, 71.6k 23.99 (share 0.5: 24.63); 0.1: 54.7k 25.55 @0.089, 113.6k 27.12 @0.1005 (share 0.5:
# 27.02 @0.103); 0.2: 113.6k 28.17 (share 0.5: 27.88), 150k 27.58, 202k 27.19. Sized for 3 bits per parameter
# (the default) the sweep had 20k 20.62, 43k 23.35, 95k 26.62 @0.094, 202k 27.66 at share 0.5. The same bits
# per parameter on bigbuckbunny 320×180 (share 0.7): 0.02: 117k 23.16 dB (51k at 3 bits: 22.49); 0.2: 292k
# 28.81 dB, 200k 28.05 (507k at 3 bits: 28.20). Those were measured under the earlier schedule (a long noisy
# phase); with the straight-through phase taking two thirds of the quantized epochs (train.schedule) and λ
# held through the noisy phase, 0.2 bpp pays for a larger model: carphone 113k (5.35 bits) 28.70 dB @0.1983,
# 150k (4.0 bits) 29.16 @0.1925; bigbuckbunny 28.49 @0.1953 -> 28.57 @0.1938 (the 0.1 point and below were
# not re-measured, so only the 0.2 anchor moved).
# Those sizes are of the reference's widths; under RD_REDUCE / RD_LOWER_WIDTH (below) the same file holds
# 1.25× the parameters, most of them in the cheap low-resolution stages (the table times 0.8; carphone 0.09
# bpp: 131k params 27.63 dB @0.0856 against 106.7k at the reference's widths 27.65 @0.0862, at 0.85× the
# time; 0.2: 189k 28.94 @0.1905 against the sweep row's 29.14 @0.1929; 0.02: 56k 23.51 @0.0192 against 23.70).
RD_BITS_PER_PARAM = tuple((bpp, 0.8 * b) for bpp, b in ((0.02, 1.35), (0.043, 1.83), (0.1, 2.68), (0.2, 4.0)))


# Under a bpp target the rate-distortion fit gives the embeddings about RD_EMBED_SHARE stored values per
# pixel per target bpp (embed_channels = share · bpp · H·W / cells per frame, 2..16; 16 is the reference's):
# every frame's embedding is paid for whatever the rate, so at low rates 16 channels crowd out the
# decoder. Measured (30 + 3 epochs, one fit each, file PSNR; embed_channels 2/4/8/16): carphone (12 cells
# per frame) 0.02 bpp: 22.88 / 22.94 / 22.40 / 21.14 dB; 0.043: — / 25.27 / 25.09 / 24.64; 0.093: — /
# 26.73 / 26.85 / 27.17; bigbuckbunny 320×180 (8 cells) 0.02: — / 23.33 / 23.43 / 22.82; 0.043: — / 24.98 /
# — / 25.04. The best counts sit at 0.044–0.095 values per pixel per bpp on both clips; 0.065 is between.
# Swept with the rule (`nerva rd`, bench/README): carphone 3 channels 22.96 dB @0.0203, 6 ch 24.87 @0.0431,
# 13 ch 26.88 @0.0964 (16 ch: 27.17 @0.0960: at 0.093 every smaller count measured lost 0.3–0.45 dB, so
# the share there may want ≥ 0.08, which would give bigbuckbunny 12 at 0.02, between its 8 and 16);
# bigbuckbunny 9 ch 23.23 @0.0198. The rule reads the default embedding grid (an embed_h / embed_w
# override is not followed).
RD_EMBED_SHARE = 0.065


# Under rate-distortion training HNeRV's stage widths fall faster than the reference's (C_in / 1.2, at least
# 12): a stage at full resolution costs its width times every pixel in compute but few parameters, and
# the rate term, not the width, now keeps the file small. Measured on carphone at 0.09 bpp (30 + 3 epochs,
# two fits at a time on 2 cores, file PSNR @ file bpp): reference widths 106.7k params (23, 19, 16, 13, 12)
# 27.65 dB @0.0862 in 208 s; /1.5 at least 6, same 2.68 bits per parameter, 104k (32, 21, 14, 9, 6) 27.38
# @0.0859 in 176 s; /1.35 at least 8, 102k (27, 20, 15, 11, 8) 27.39 @0.0859 in 165 s; /1.5 at least 6
# sized for 0.8 × the bits per parameter (RD_BITS_PER_PARAM), 131k (36, 24, 16, 11, 7) 27.63 @0.0856 in
# 177 s: the reference's quality at 0.85 × its time. The fixed pipeline keeps the reference's widths.
RD_REDUCE = 1.5
RD_LOWER_WIDTH = 6


def rd_fields(geometry: Geometry, bpp: float) -> dict:
    """{'embed_channels': n, 'reduce', 'lower_width'}: RD_EMBED_SHARE · bpp stored embedding values per
    pixel, and the rate-distortion fit's stage widths (for_size's keywords)."""
    c = HNeRVConfig.with_width(geometry, LOWER_WIDTH)   # the embedding grid is the base grid at any width
    per_cell = RD_EMBED_SHARE * bpp * geometry.height * geometry.width / (c.embed_h * c.embed_w)
    return {"embed_channels": int(min(max(round(per_cell), 2), 16)), "reduce": RD_REDUCE,
            "lower_width": RD_LOWER_WIDTH}


def count_params(config) -> int:
    return sizing.count(init, config)


SPEC = register(ModelSpec(
    name="hnerv", model_id=2, config_cls=HNeRVConfig, init=init, render=render,
    for_size=HNeRVConfig.for_size, init_aux=init_aux, train_render=train_render, finalize=finalize,
    rd_fields=rd_fields, preset=dict(FAMILY_PRESET, rd_fit_share=RD_FIT_SHARE, rd_noise_share=RD_NOISE_SHARE,
                             rd_bits_per_param=RD_BITS_PER_PARAM), embeddings=r"latents/.*",
    description="HNeRV: ConvNeXt-encoded per-frame embeddings -> conv/PixelShuffle decoder"))
