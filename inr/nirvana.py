"""NIRVANA (Maiya et al., CVPR 2023): a small network per group of G frames, fitted autoregressively, with
learned quantization and a rate term, stored as group 0's integers plus each later group's integer residual.

Per group, the network maps the centre coordinates of every P×P patch of the (padded) frame to that
patch in all G frames of the group: Fourier features of (u, v) -> SIREN layers -> a linear layer giving
`cell × cell` cells of `features` channels per patch -> one conv + PixelShuffle(`up`) upsampling block
over the whole frame (so neighbouring patches meet without seams; P = cell·up) -> G heads, one per frame
(a 1×1 conv with 3·G outputs). The padding is cropped away.

Encoding (train/loop.py runs the phases this module's `schedule` returns; nothing NIRVANA-specific in
the loop): group 0 is fitted from scratch for more steps; group k starts from group k-1's quantized
weights and is fitted for fewer steps. The group being fitted lives in the encode-time state (`aux`),
so a step trains one group's tensors whatever the number of groups. Every weight is quantized with a
learned per-channel step shared by all groups (learned in group 0, then frozen, so integer residuals
between groups are meaningful), rounded straight-through in the forward pass. The loss adds λ
(`rate_weight`, in MSE per bit per pixel) times a differentiable estimate of the group's bits: each
tensor's integer residual to the previous group's integers under the file's LAPLACE model, the one rate
model of the project (train.rd.bits: fitted to the rounded residuals as the encoder fits its table, and the
model the file codes them with). A step runs the shared trunk once and the heads of `batch` of the group's
frames. With
`target_psnr`, a step covers the whole group and a group's fit ends at the first step whose coded
weights reach that PSNR on the group: a group whose frames its predecessor already renders well enough
(a static scene) keeps those integers, and its residual costs only its section's framing.

File: collection `groupNNN` per group; group 0 is a TENSORS section, group k a RESIDUAL section against
group k-1 (codec/tensors.py), all sharing group 0's steps. Random access: frame t needs the integer chain
up to its group, k+1 sections of cheap integer additions (the whole chain is rebuilt once at load);
once the weights are rebuilt the groups are independent and a batch of frames from any groups renders in
one jitted call, each frame through its own head only.

Where the paper is silent (its constants were not available), chosen on carphone (120 frames, 300k
parameters, 6-bit comparison with HNeRV; `nerva rd` rows, PSNR/bpp as measured, one seed, so differences
under ~0.1 dB are noise): P = 8 (cell 2 × up 4), three SIREN layers, six Fourier octaves (eight: same).
G = 12 (at λ 0.0075, 120 epochs: G 8 28.10 dB at 0.141 bpp, G 12 28.93 dB at 0.163, G 16 28.96 dB at
0.173; G 12 gains ~0.35 dB at equal rate). Steps on 4 of the group's frames (all 8 of G 8: -0.1 dB for
the same steps, but 1.45x the steps per second). Half of all steps for group 0 (at 0.1 of them 1.7 dB
worse at equal rate, 0.25 0.4 dB worse, 0.4-0.55 the same, 0.7 0.2 dB worse). Learning rates (the preset's
lr is group 0's): at 1e-2, warm-started groups at 0.3×, 0.5×, 1×, 2×, 4× of it: 2× best, at 4× their
residuals double; group 0 at 2e-2, 3e-2 or 5e-2 with later groups at 1.5e-2-2e-2 gains another ~0.5 dB at
equal rate (3e-2 and 0.5× chosen; 2e-2 for later groups is as good). λ = 0.013 MSE per bpp lands at
0.111 bpp at the preset's 120 epochs (λ has to grow with the steps: more steps at one λ buy mostly rate).
ω0 = 1 rather than SIREN's 30: on carphone's first group (4 frames, 21.6k parameters, 400 full-group Adam
steps) ω0 = 30 reached 27.8 dB at its best learning rate (2e-3; 1e-2 diverges) and ω0 = 1 28.8 dB at 1e-2.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inr import sizing
from inr.config import ConfigBase, Geometry, Limit
from inr.grid import check_render
from inr.layers import MAX_CHANNELS, Conv, Dense, gelu, inits, output_head, uniform_init
from inr.registry import ModelSpec, register


# The sized configs' choices (see the module docstring). The field defaults stay what files written
# before a field existed were fitted with (FORMAT.md §4: a missing field reads as its default).
PRESET = dict(group=12, rate_weight=0.013, warm_lr=0.5, batch=4, group0_share=0.5)


@dataclasses.dataclass(frozen=True)
class NIRVANAConfig(ConfigBase):
    """NIRVANA. Presets: `for_size(geometry, n_params)` (all groups' parameters, with PRESET's choices);
    `tiny()` for tests."""

    geometry: Geometry
    group: int = 4                 # G, frames per group (the last group may be shorter)
    cell: int = 2                  # MLP output cells per patch side
    up: int = 4                    # upsampling factor; the patch side is P = cell · up pixels
    width: int = 64                # SIREN hidden width
    depth: int = 3                 # SIREN layers
    features: int = 8              # channels of each MLP output cell
    up_channels: int = 8           # channels after the upsampling block
    pe_levels: int = 6             # Fourier octaves of the patch centre: sin/cos(2^l·π·u), l < pe_levels
    omega0: float = 1.0            # SIREN frequency factor ω0 (see the module docstring)
    rate_weight: float = 1e-3      # λ in MSE per bpp of the group (encode time only)
    init_bits: int = 8             # the learned steps start at range / (2^init_bits − 1) (encode time only)
    warm_lr: float = 0.2           # learning-rate multiplier of the warm-started groups (encode time only)
    target_psnr: float = 0.0       # a group's fit ends once it reaches this PSNR (dB); 0 = all steps (encode time)
    batch: int = 0                 # frames per step (at most G); 0 or target_psnr: all G (encode time only)
    group0_share: float = 0.25     # share of all steps spent on group 0, fitted from scratch (encode time only)

    # Field limits (codec/FORMAT.md §4.3), far above the presets (G 12, P 8, width < 4096, depth 3, L 6):
    # at most 1024 frames per group (3·G head outputs); patches of at most 64 cells of 16 pixels; a
    # SIREN of at most 64 layers (tracing stays short); 2^32 as the highest Fourier frequency of a
    # coordinate in [-1, 1] (finite in float32, and far past any pixel's detail).
    LIMITS = dict(group=Limit(1, 1024), cell=Limit(1, 64), up=Limit(1, 16), width=Limit(1, MAX_CHANNELS),
                  depth=Limit(1, 64), features=Limit(1, MAX_CHANNELS), up_channels=Limit(1, MAX_CHANNELS),
                  pe_levels=Limit(0, 32), omega0=Limit(0, 1e4, open_lo=True, open_hi=True),
                  rate_weight=Limit(0, 1e6, open_hi=True), init_bits=Limit(2, 16),
                  warm_lr=Limit(0, 10, open_lo=True), target_psnr=Limit(0, 100, open_hi=True),
                  batch=Limit(0, 1024), group0_share=Limit(0, 1, open_lo=True, open_hi=True))

    def __post_init__(self):
        self.check_limits()
        nh, nw = self.grid
        check_render(type(self).__name__, self.geometry.height, self.geometry.width, nh * self.patch,
                     nw * self.patch)

    @property
    def patch(self) -> int:
        return self.cell * self.up

    @property
    def n_groups(self) -> int:
        return -(-self.geometry.frames // self.group)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per column and per row of the padded frame."""
        return -(-self.geometry.height // self.patch), -(-self.geometry.width // self.patch)

    @classmethod
    def for_size(cls, geometry: Geometry, n_params: int, **overrides) -> "NIRVANAConfig":
        """The widest SIREN whose parameters over all groups stay within `n_params`."""
        return sizing.solve_width(lambda w: cls.with_width(geometry, w).replace(**overrides), n_params,
                                  count_params, lo=4)

    @classmethod
    def with_width(cls, geometry: Geometry, width: int) -> "NIRVANAConfig":
        # The conv block dominates small groups; letting its channels drop to 2 keeps budgets of a few
        # hundred parameters per group reachable (carphone's 30 groups at 50k parameters in all).
        return cls(geometry, width=width, features=max(2, min(16, width // 8)),
                   up_channels=max(2, min(16, width // 8)), **PRESET)

    @classmethod
    def tiny(cls, geometry: Geometry | None = None) -> "NIRVANAConfig":
        return cls(geometry or Geometry.of(8, 32, 48), group=4, width=16, depth=2, features=4, up_channels=4,
                   pe_levels=3)


def collection(config: "NIRVANAConfig", k: int) -> str:
    """The collection of group k: 'group000', 'group001', ... zero-padded to at least 3 digits and to
    the digits of the last group, so that sorted names are group order."""
    return f"group{k:0{max(3, len(str(config.n_groups - 1)))}d}"


def _coordinates(config: NIRVANAConfig) -> jnp.ndarray:
    """(nh, nw, 2 + 4·pe_levels): patch centres (u, v) in [-1, 1] and their Fourier features."""
    nh, nw = config.grid
    u = (2.0 * (jnp.arange(nh, dtype=jnp.float32) + 0.5) / nh) - 1.0
    v = (2.0 * (jnp.arange(nw, dtype=jnp.float32) + 0.5) / nw) - 1.0
    uv = jnp.stack(jnp.meshgrid(u, v, indexing="ij"), axis=-1)
    feats = [uv]
    for lvl in range(config.pe_levels):
        ang = uv * (2.0 ** lvl * math.pi)
        feats += [jnp.sin(ang), jnp.cos(ang)]
    return jnp.concatenate(feats, axis=-1)


class SirenLayer(nn.Module):
    """sin(ω0 · (x W + b)); SIREN init: the first layer U(±1/in), later ones U(±√(6/in)/ω0)."""

    features: int
    omega0: float
    first: bool

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        bound = 1.0 / fan_in if self.first else math.sqrt(6.0 / fan_in) / self.omega0
        dense = nn.Dense(self.features, kernel_init=uniform_init(bound), bias_init=uniform_init(1.0 / math.sqrt(fan_in)),
                         name="dense")
        return jnp.sin(self.omega0 * dense(x))


class GroupNet(nn.Module):
    """One group's network: frames `which` (B,) of the group (positions 0..G-1; None = all G), (B, H, W, 3)
    in [0, 1]. The frames share everything up to their heads."""

    config: NIRVANAConfig

    @nn.compact
    def __call__(self, coords: jnp.ndarray, which: jnp.ndarray | None = None) -> jnp.ndarray:
        c = self.config
        nh, nw = c.grid
        x = coords
        for i in range(c.depth):
            x = SirenLayer(c.width, c.omega0, i == 0, name=f"siren{i}")(x)
        x = Dense(c.cell * c.cell * c.features, name="cells")(x)   # linear, PyTorch-default init
        # Each patch's cell×cell block, laid out in place: (nh, nw, cell, cell, C) -> (nh·cell, nw·cell, C).
        x = x.reshape(nh, nw, c.cell, c.cell, c.features).transpose(0, 2, 1, 3, 4)
        x = x.reshape(1, nh * c.cell, nw * c.cell, c.features)
        x = gelu(Conv(c.up_channels * c.up ** 2, 3, name="up")(x))[0]
        x = _ShuffledHeads(c.group, c.up, name="heads")(x, which)      # (B, H', W', 3)
        return output_head(x)[:, :c.geometry.height, :c.geometry.width, :]


class _Kernel1x1(nn.Module):
    """The parameters of `Conv(features, 1)` (PyTorch's default init): kernel (1, 1, C, F), bias (F,)."""

    features: int

    @nn.compact
    def __call__(self, channels: int):
        kernel_init, bias_init = inits("torch", channels)
        kernel = self.param("kernel", kernel_init, (1, 1, channels, self.features))
        return kernel[0, 0], self.param("bias", bias_init, (self.features,))


class _ShuffledHeads(nn.Module):
    """PixelShuffle(up) -> 1×1 conv with 3·G outputs -> (B, H, W, 3), computed as the 1×1 conv on the map
    before the shuffle and one transpose at the end. The same function and parameters as
    `Conv(3·G, 1)(pixel_shuffle(x, up))` (which commute: the shuffle only moves pixels), but the wide
    map is never shuffled: on carphone's G = 8 groups forward 3.3 -> 1.0 ms, gradient 4.3 -> 2.9 ms. Only
    the heads of frames `which` run (output channel 3·g + k is colour k of frame g)."""

    group: int
    up: int

    @nn.compact
    def __call__(self, x, which=None):                       # (h, w, C·up²), PyTorch's shuffle order
        h, w, crr = x.shape
        r, c = self.up, crr // (self.up * self.up)
        kernel, bias = _Kernel1x1(3 * self.group, name="conv")(c)
        kernel, bias = kernel.reshape(c, self.group, 3), bias.reshape(self.group, 3)
        if which is not None:
            kernel, bias = kernel[:, which], bias[which]
        y = jnp.einsum("hwcij,cbk->bhiwjk", x.reshape(h, w, c, r, r), kernel) + bias[:, None, None, None, None]
        return y.reshape(y.shape[0], h * r, w * r, 3)


def init(config: NIRVANAConfig, key: jax.Array):
    """Every group starts as the same network (later groups are warm-started from their predecessor)."""
    params = GroupNet(config).init(key, _coordinates(config))["params"]
    return {collection(config, k): params for k in range(config.n_groups)}


def _stack(config: NIRVANAConfig, variables):
    """A tree keyed by collection ('group000', ...) -> one tree with the groups stacked on a leading axis."""
    groups = [variables[collection(config, k)] for k in range(config.n_groups)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *groups)


def render(config: NIRVANAConfig, variables, idx: jnp.ndarray) -> jnp.ndarray:
    """Frames `idx` from any groups: each frame's group network is gathered and run (one jitted map)."""
    stacked = _stack(config, variables)
    coords = _coordinates(config)

    def one(t):
        params = jax.tree.map(lambda w: w[t // config.group], stacked)
        return GroupNet(config).apply({"params": params}, coords, (t % config.group)[None])[0]
    return jax.lax.map(one, idx)


# --- encode time: learned steps, straight-through rounding, rate estimate, schedule -------------------

def _round_ste(x):
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


def _steps(aux) -> dict:
    """Float16-representable positive steps from the learned log-steps (straight-through rounding)."""
    def f(log_step):
        s = jnp.clip(jnp.exp(log_step), 1e-7, 1e4)   # stays a positive, finite float16
        return s + jax.lax.stop_gradient(s.astype(jnp.float16).astype(jnp.float32) - s)
    return jax.tree.map(f, aux["log_step"])


def _on_grid(params, steps):
    """Straight-through quantized weights: step · round(w / step), per output channel."""
    return jax.tree.map(lambda w, s: s * _round_ste(w / s), params, steps)


def init_aux(config: NIRVANAConfig, key: jax.Array):
    """Encode-time state. The group being fitted lives here, not in the stored variables, so a step
    touches one group's tensors whatever the number of groups: `work` (its float weights), `ref` (the
    previous group's integers, zeros for group 0), `group` (its index). Also the learned per-channel
    log-steps (shared by all groups; set from group 0's weights at its first phase)."""
    abstract = jax.eval_shape(lambda: GroupNet(config).init(key, _coordinates(config))["params"])
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), abstract)
    return {"work": zeros, "ref": zeros, "group": jnp.zeros((), jnp.int32),
            "log_step": jax.tree.map(lambda a: jnp.zeros(a.shape[-1:] if a.ndim >= 2 else (1,), jnp.float32),
                                     abstract)}


def train_render(config: NIRVANAConfig, variables, aux, idx, frames):
    """All frames of a phase belong to the group being fitted: its network runs once on the quantization
    grid, with the batch's heads."""
    return GroupNet(config).apply({"params": _on_grid(aux["work"], _steps(aux))}, _coordinates(config),
                                  idx % config.group)


def rate_symbols(config: NIRVANAConfig, variables, aux, idx) -> dict:
    """{path: symbols} of the group being fitted as its section codes them: its integers' residuals to
    the previous group's (group 0: to zero), rounded straight through."""
    steps, refs = jax.tree.leaves(_steps(aux)), jax.tree.leaves(aux["ref"])
    return {p: _round_ste(w / s) - ref for (p, w), s, ref in zip(_flat(aux["work"]), steps, refs)}


def _stored(config: NIRVANAConfig, variables, aux):
    """The stored variables with the group being fitted written back."""
    return {**variables, collection(config, int(aux["group"])): aux["work"]}


def start_phase(config: NIRVANAConfig, variables, aux, phase):
    """Group 0: its initial weights, steps from them at `init_bits`. Group k: group k-1's weights go back
    into the stored variables; group k starts from their quantized values, which are also its reference."""
    k = phase.frames[0] // config.group
    if k == 0:
        work = variables[collection(config, 0)]
        ref, log_step = _initial_steps(work, config.init_bits)
        return variables, {**aux, "work": work, "ref": ref, "group": jnp.int32(0), "log_step": log_step}
    variables = _stored(config, variables, aux)
    ints, work = _requantized(variables[collection(config, k - 1)], aux["log_step"])
    return variables, {**aux, "work": work, "ref": ints, "group": jnp.int32(k)}


@functools.partial(jax.jit, static_argnums=1)
def _initial_steps(weights, init_bits: int):
    """(zero references, per-channel log-steps spanning each channel's range at `init_bits`)."""
    def log_step(w):
        axes = tuple(range(w.ndim - 1)) if w.ndim >= 2 else tuple(range(w.ndim))
        span = jnp.maximum(w.max(axis=axes), 0.0) - jnp.minimum(w.min(axis=axes), 0.0)
        return jnp.log(jnp.maximum(jnp.atleast_1d(span) / (2 ** init_bits - 1), 1e-6))
    return jax.tree.map(jnp.zeros_like, weights), jax.tree.map(log_step, weights)


@jax.jit
def _requantized(weights, log_step):
    """(integers, weights on the grid) of a group's weights under the learned steps."""
    steps = _steps({"log_step": log_step})
    ints = jax.tree.map(lambda w, s: jnp.round(w / s), weights, steps)
    return ints, jax.tree.map(lambda q, s: q * s, ints, steps)


def finalize(config: NIRVANAConfig, variables, aux, frames):
    """The stored weights: every group (the last fitted one written back) exactly on its quantization grid."""
    steps = _steps(aux)
    return {name: jax.tree.map(lambda w, s: s * jnp.round(w / s), tree, steps)
            for name, tree in _stored(config, variables, aux).items()}


def learned_steps(config: NIRVANAConfig, variables, aux) -> dict:
    """{'groupNNN/path': float32 steps}: every group's tensors use the learned per-channel steps (shared by
    all groups), which the codec rounds to the file's float16."""
    flat_steps = dict(_flat(jax.tree.map(lambda s: jnp.asarray(s, jnp.float32), _steps(aux))))
    return {f"{name}/{path}": flat_steps[path] for name, tree in variables.items() for path, _ in _flat(tree)}


def _flat(tree) -> list[tuple[str, np.ndarray]]:
    out = []
    for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out.append(("/".join(str(getattr(k, "key", k)) for k in p), x))
    return out


def references(config: NIRVANAConfig) -> dict[str, str]:
    return {collection(config, k): collection(config, k - 1) for k in range(1, config.n_groups)}


def n_collections(config: NIRVANAConfig) -> int:
    """One collection per group: a reader can check a header against its file before tracing anything."""
    return config.n_groups


STEPS_PER_EPOCH = 0.5  # steps per frame-epoch: `epochs` buys as many steps as other models make at batch 2


def schedule(config: NIRVANAConfig, standard: list[dict], epochs: float, lr: float) -> list[dict]:
    """Instead of the `standard` phases, one per group, each step on `batch` of the group's frames (the
    config's; --batch does not apply: with a target PSNR a step takes the whole group). `epochs` buys the number of steps
    other models take at batch 2 (epochs · T / 2); group 0 gets `group0_share` of them, every later group
    (warm-started) an equal part of the rest — so encoding costs as many, but much cheaper, steps."""
    total = epochs * config.geometry.frames * STEPS_PER_EPOCH
    n = config.n_groups
    first = total if n == 1 else config.group0_share * total
    later = 0.0 if n == 1 else (total - first) / (n - 1)
    phases = []
    for k in range(n):
        start, stop = k * config.group, min((k + 1) * config.group, config.geometry.frames)
        # A phase trains the group in `aux/work` (group 0 also the learned steps), so
        # every later group shares one phase shape and one compiled step, whose cost does not grow with
        # the number of groups.
        only = r"aux/(work|log_step)/.*" if k == 0 else r"aux/work/.*"
        steps = max(1.0, first if k == 0 else later)
        # With a target PSNR a step's PSNR decides the stop, so it must be the whole group's.
        batch = stop - start if config.target_psnr or not config.batch else min(config.batch, stop - start)
        phases.append(dict(name=f"group{k}", epochs=steps / ((stop - start) // batch),
                           lr=lr if k == 0 else lr * config.warm_lr, warmup=0.1 if k == 0 else 0.0,
                           use_encoder=True, quantize=True, frames=(start, stop), train_only=only,
                           rate_weight=config.rate_weight, batch=batch, target_psnr=config.target_psnr))
    return phases


def count_params(config) -> int:
    return sizing.count(init, config)


SPEC = register(ModelSpec(
    name="nirvana", model_id=5, config_cls=NIRVANAConfig, init=init, render=render,
    for_size=NIRVANAConfig.for_size, init_aux=init_aux, train_render=train_render, finalize=finalize,
    schedule=schedule, start_phase=start_phase, rate_symbols=rate_symbols, learned_steps=learned_steps,
    references=references, n_collections=n_collections,
    # Learned steps and residual coding: --bits, --embed-bits, --prune and --batch do not apply (the config's
    # init_bits, rate_weight and batch do); the file spends ~1.1-1.3 bits per parameter (bench rows of
    # results/nirvana_*.jsonl: 8 · 42,329 B / 300k on carphone, 8 · 96,815 B / 600k on bigbuckbunny@320x180)
    fit_options=frozenset(), bits_per_param=lambda bits: 1.2,
    # small per-group SIRENs: group 0 at 3e-2, later groups at its warm_lr (0.5x) of it; size = all groups
    preset=dict(size=300_000, lr=3e-2, beta1=0.9, epochs=120),
    description="NIRVANA: a patch-wise SIREN network per group of frames, residual-coded group to group"))
