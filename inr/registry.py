"""The model registry: a name and a hand-assigned, never-reused id for every model family."""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Callable

import jax
import numpy as np

from inr.errors import ConfigError

Variables = dict[str, Any]   # {collection name: params pytree}, e.g. {"params": ..., "latents": ...}


# The standard fit options (`nerva fit --bits ... --embed-bits ... --prune ... --batch ... --lambda ...`) a
# family may honour; one it does not honour is refused when given, never ignored.
FIT_OPTIONS = frozenset({"bits", "embed_bits", "prune", "batch", "lambda", "pipeline"})

# Which stored tensors global magnitude pruning may touch, as (regex over 'collection/path', prunable)
# rules, first match wins: weight matrices and kernels of the decoder, not biases, not the output head
# (every convolutional family names it `head`), not per-frame embeddings (NeRV: stem and block weights).
PRUNE_RULES = ((r"params/head/.*", False), (r"params/.*kernel", True))


# The training preset of a family that states none: Adam at 1e-3 for 150 epochs on 100k parameters
DEFAULT_PRESET = {"size": 100_000, "lr": 1e-3, "beta1": 0.9, "epochs": 150}


def no_aux(config, key) -> dict:
    return {}


def keep_variables(config, variables, aux, frames):
    return variables


def phase_unchanged(config, variables, aux, phase):
    return variables, aux


def no_rate_symbols(config, variables, aux, idx) -> dict:
    return {}


def standard_schedule(config, phases: list[dict], epochs: float, lr: float) -> list[dict]:
    return phases


def no_rd_fields(geometry, bpp: float) -> dict:
    return {}


def no_learned_steps(config, variables, aux) -> dict:
    return {}


def no_references(config) -> dict:
    return {}


def no_rec_collections(config) -> dict:
    return {}


def no_asset_fields(config) -> dict:
    return {}


@dataclasses.dataclass(frozen=True)
class RecLayout:
    """A collection stored as one relative-entropy-coded sample of its posterior (codec/rec.py, FORMAT.md §17):
    for each of its elements, in the order jax.flatten_util.ravel_pytree lays the collection out, which entry
    of the prior's tables (mean, scale, expected KL) it draws from and in which coding stage it is coded
    (stage 0 first; the encoder re-tunes what is not yet coded between stages). Numpy only: the decoder
    derives the blocks from it and the prior, integers throughout."""

    entry: np.ndarray       # (N,) int32, into the prior's tables of `entries` rows
    stage: np.ndarray       # (N,) int32 coding stage
    entries: int            # rows of the prior's tables
    init_scale: np.ndarray  # (entries,) float32: the prior's scale before it is learned


def bits_per_param_at(bits: int) -> float:
    """File bits per parameter at `bits`-bit quantization, entropy coding and side information included:
    measured on carphone with bench/fit.py at 8 bits (NeRV 7.6, HNeRV 7.3 at 50k parameters); other bit
    depths assume the same saving per parameter (not measured). Used only to size a model for a --bpp
    target before fitting; the real file size is what is reported."""
    return max(bits - 0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the codec and the trainer need to know about one model family: one protocol.

    Every field after `for_size` has a default that is the behaviour of a plain decoder (NeRV), so a
    family states only where it differs, and codec/ and train/ call every hook unconditionally: there is
    no `if spec.<hook> is not None` anywhere, and no family is named outside its own module.

    Stored variables are a dict of collections; every collection goes into the file. Encoder-only state
    (HNeRV's ConvNeXt encoder, NIRVANA's group in training, later RECOMBINER posteriors or NeuMeta's
    donor) is `aux`: it is trained by phases that ask for it and turned into stored variables by
    `finalize`; it never reaches the file.
    """

    name: str                    # CLI / registry name, e.g. "hnerv"
    model_id: int                # written in every file; assigned by hand, never reused
    config_cls: type             # frozen dataclass with `geometry`, `tiny()`, `to_dict`/`from_dict`
    init: Callable               # (config, key) -> Variables
    render: Callable             # (config, variables, idx (B,) int32) -> frames (B, H, W, 3) float32 in [0, 1]
    for_size: Callable           # (geometry, n_params) -> config with about n_params stored parameters
    description: str = ""
    # --- encode-time state and training ---
    init_aux: Callable = no_aux                   # (config, key) -> aux pytree ({}: none)
    train_render: Callable | None = None          # (config, variables, aux, idx, frames (B,H,W,3)) -> frames, in
                                                  # phases that use the encoder; None: `render`
    finalize: Callable = keep_variables           # (config, variables, aux, frames (T,H,W,3)) -> Variables, after
                                                  # the last phase that used the encoder
    start_phase: Callable = phase_unchanged       # (config, variables, aux, phase) -> (variables, aux)
    rate_symbols: Callable = no_rate_symbols      # (config, variables, aux, idx) -> {name: symbols}: the integer
                                                  # symbols (rounded straight through, differentiable) the file
                                                  # will code for the tensors the phase trains, beyond the
                                                  # learned-step tensors of train.rd; the trainer prices them
                                                  # under the file's LAPLACE model (train.rd.bits) in phases
                                                  # with a rate weight, and the codec codes them with it
    # The family's training preset for a 2-core CPU (train.presets.Preset fields: size, lr, beta1, epochs,
    # optionally loss, rd_fit_share, rd_noise_share and rd_bits_per_param). Plain values: inr imports no train.
    preset: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_PRESET))
    # (config, standard phases as dicts of train.schedule.Phase fields, epochs, lr) -> the family's phases:
    # the standard fit -> prune -> QAT schedule, or its own (NIRVANA: one phase per group of frames)
    schedule: Callable = standard_schedule
    rd_fields: Callable = no_rd_fields     # (geometry, target bpp) -> {config field or for_size keyword:
                                           # value}: what a rate-distortion fit under --bpp sets besides the
                                           # size (under the model string's own fields), e.g. HNeRV's
                                           # embedding channels and stage widths
    fit_options: frozenset | None = None   # which of FIT_OPTIONS the family honours; None: all (--embed-bits
                                           # only with `embeddings`)
    # --- what is stored, and how ---
    prune_rules: tuple = PRUNE_RULES              # which tensors --prune may zero
    embeddings: str = ""                          # regex over 'collection/path': the tensors --embed-bits sets
    bits_per_param: Callable = bits_per_param_at  # (bits) -> expected file bits per parameter, for --bpp sizing
    learned_steps: Callable = no_learned_steps    # (config, variables, aux) -> {'collection/path': float32
                                                  # steps}: quantization steps the family learned, used instead
                                                  # of the policy's bits for those tensors
    references: Callable = no_references          # (config) -> {collection: earlier collection it is residual-
                                                  # coded against}; the codec writes those as RESIDUAL sections
    # (config) -> int: how many collections `init` returns, which a reader checks against the file's
    # sections before it traces the model; a family whose count grows with the config counts them without
    # tracing; None: counted from jax.eval_shape(init), cheap for a fixed set
    n_collections: Callable | None = None
    # --- relative-entropy-coded samples (RECOMBINER) ---
    # (config) -> {collection: RecLayout}: the collections the file holds as one sample of a Gaussian posterior,
    # coded by relative-entropy coding against a learned prior (codec/rec.py) instead of quantized tensors; the
    # `rec` pipeline (train/variational.py) fits and codes them. {}: none
    rec_collections: Callable = no_rec_collections
    # Collections the prior asset supplies rather than the file (a network shared by every clip coded with that
    # prior, learned with it): the decoder takes them from the asset the file names (codec/assets.py)
    asset_collections: frozenset = frozenset()
    # (config) -> {field: value}: the config fields a prior asset is learned for and must match (its meta
    # record's "architecture"); {}: any
    asset_fields: Callable = no_asset_fields
    # Whether `names()` lists the family (the CLI's help, the benches and every family-wide test sweep the listed
    # ones). A family under construction is registered unlisted: it fits, writes and decodes files by name, while
    # the sweeps' contracts are not yet all met (RECOMBINER, issue 15)
    listed: bool = True
    # The fitting pipelines the family has (`nerva fit --pipeline`), its default first: "rd" and "fixed" train
    # quantized weights (train.loop), "rec" a posterior coded by relative-entropy coding (train.variational)
    pipelines: tuple = ("rd", "fixed")

    def __post_init__(self):
        if self.fit_options is None:
            object.__setattr__(self, "fit_options", FIT_OPTIONS if self.embeddings else FIT_OPTIONS - {"embed_bits"})
        if self.train_render is None:   # a family without an encoder renders as it decodes
            render = self.render
            object.__setattr__(self, "train_render", lambda config, variables, aux, idx, frames:
                               render(config, variables, idx))
        if self.n_collections is None:
            init = self.init
            object.__setattr__(self, "n_collections", lambda config: _count_collections(init, config))


@functools.lru_cache(maxsize=256)
def _count_collections(init: Callable, config) -> int:
    """How many collections init(config) returns, from its shapes alone (a few KB per config cached, as
    codec.api.abstract_variables caches them: room for a run of hostile headers)."""
    return len(jax.eval_shape(lambda: init(config, jax.random.key(0))))


_BY_NAME: dict[str, ModelSpec] = {}
_BY_ID: dict[int, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Adds a family; a duplicate name or id is a programming error and raises."""
    if spec.name in _BY_NAME or spec.model_id in _BY_ID:
        raise ValueError(f"model name {spec.name!r} or id {spec.model_id} is already registered")
    _BY_NAME[spec.name] = spec
    _BY_ID[spec.model_id] = spec
    return spec


def get(name: str) -> ModelSpec:
    if name not in _BY_NAME:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(names())}")
    return _BY_NAME[name]


def get_by_id(model_id: int) -> ModelSpec:
    if model_id not in _BY_ID:
        raise ConfigError(f"unknown model id {model_id}; this nerva knows ids {sorted(_BY_ID)}")
    return _BY_ID[model_id]


def spec_of(config: Any) -> ModelSpec:
    for spec in _BY_NAME.values():
        if type(config) is spec.config_cls:
            return spec
    raise ConfigError(f"no registered model uses config type {type(config).__name__}")


def names(listed_only: bool = True) -> list[str]:
    """The listed families (or every registered one), by model id."""
    return sorted((n for n, s in _BY_NAME.items() if s.listed or not listed_only), key=lambda n: _BY_NAME[n].model_id)


def parse(model: str) -> tuple[ModelSpec, dict[str, Any]]:
    """A model string -> (spec, config overrides): 'hnerv' or 'hnerv:cam_nodes=30:act=swish'.

    Overrides set scalar config fields (int, float, bool, str) before the model is sized, so a variant
    such as HNeRV with CAM is sized, fitted, stored and compared like any model, with no special case.
    Geometry and the per-stage tuples come from sizing and cannot be overridden.
    """
    name, *items = model.split(":")
    spec = get(name.strip())
    hints = typing.get_type_hints(spec.config_cls)
    overrides: dict[str, Any] = {}
    settable = settable_fields(spec)
    for item in (x.strip() for x in items):
        key, eq, value = (x.strip() for x in item.partition("="))
        if not eq or key not in settable:
            raise ConfigError(f"bad model option {item!r} for {spec.name}: use FIELD=VALUE with FIELD one of "
                              f"{', '.join(settable)}")
        try:
            overrides[key] = _PARSERS[hints[key]](value)
        except ValueError:
            raise ConfigError(f"model option {key} needs {hints[key].__name__}, got {value!r}") from None
    return spec, overrides


def settable_fields(spec: ModelSpec) -> list[str]:
    """The scalar config fields a model string may set ('hnerv:cam_nodes=30'), sorted."""
    hints = typing.get_type_hints(spec.config_cls)
    return sorted(k for k, t in hints.items() if t in _PARSERS and k in _field_names(spec))


def _parse_bool(v: str) -> bool:
    if v.lower() not in ("true", "false", "1", "0"):
        raise ValueError(v)
    return v.lower() in ("true", "1")


_PARSERS: dict[type, Callable[[str], Any]] = {int: int, float: float, bool: _parse_bool, str: str}


def _field_names(cls_or_spec) -> set[str]:
    cls = cls_or_spec.config_cls if isinstance(cls_or_spec, ModelSpec) else cls_or_spec
    return {f.name for f in dataclasses.fields(cls)}
