"""The model registry: a name and a hand-assigned, never-reused id for every model family."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable

from inr.errors import ConfigError

Variables = dict[str, Any]   # {collection name: params pytree}, e.g. {"params": ..., "latents": ...}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the codec and the trainer need to know about one model family.

    Stored variables are a dict of collections; every collection goes into the file. Encoder-only state
    (HNeRV's ConvNeXt encoder, later RECOMBINER posteriors or NeuMeta's donor) is `aux`: it is trained
    by phases that ask for it and turned into stored variables by `finalize`; it never reaches the file.
    """

    name: str                    # CLI / registry name, e.g. "hnerv"
    model_id: int                # written in every file; assigned by hand, never reused
    config_cls: type             # frozen dataclass with `geometry`, `tiny()`, `to_dict`/`from_dict`
    init: Callable               # (config, key) -> Variables
    render: Callable             # (config, variables, idx (B,) int32) -> frames (B, H, W, 3) float32 in [0, 1]
    for_size: Callable           # (geometry, n_params) -> config with about n_params stored parameters
    init_aux: Callable | None = None      # (config, key) -> aux pytree (encode-time only)
    train_render: Callable | None = None  # (config, variables, aux, idx, frames (B,H,W,3)) -> frames
    finalize: Callable | None = None      # (config, variables, aux, frames (T,H,W,3)) -> Variables
    description: str = ""
    # The family's training preset for a 2-core CPU (train.presets.Preset fields: size, lr, beta1, epochs,
    # optionally loss); None: train.presets' fallback. Plain values: inr imports no train.
    preset: dict | None = None
    # Families that train in their own phases (NIRVANA: one phase per group of frames). Plain types
    # only: inr imports neither codec nor train.
    schedule: Callable | None = None      # (config, epochs, lr) -> [dict of train.schedule.Phase fields]
    start_phase: Callable | None = None   # (config, variables, aux, phase) -> (variables, aux), at phase start
    rate: Callable | None = None          # (config, variables, aux, idx) -> estimated bits of the phase's
                                          # tensors (differentiable); idx: the step's frames
    quantize: Callable | None = None      # (config, variables, aux) -> {'collection/path': (int32 symbols,
                                          # float16 steps)}: learned steps instead of the codec's quantizer
    references: Callable | None = None    # (config) -> {collection: earlier collection it is residual-coded
                                          # against}; the codec writes those as RESIDUAL sections
    n_collections: Callable | None = None  # (config) -> int: how many collections `init` returns, computed
                                          # without tracing the model, for families whose count grows with
                                          # the config (a reader checks it against the file's sections before
                                          # tracing); None: counted from jax.eval_shape(init), cheap for a
                                          # fixed set


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


def names() -> list[str]:
    return sorted(_BY_NAME, key=lambda n: _BY_NAME[n].model_id)


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
    for item in (x.strip() for x in items):
        key, eq, value = (x.strip() for x in item.partition("="))
        settable = sorted(k for k, t in hints.items() if t in _PARSERS and k in _field_names(spec))
        if not eq or key not in settable:
            raise ConfigError(f"bad model option {item!r} for {spec.name}: use FIELD=VALUE with FIELD one of "
                              f"{', '.join(settable)}")
        try:
            overrides[key] = _PARSERS[hints[key]](value)
        except ValueError:
            raise ConfigError(f"model option {key} needs {hints[key].__name__}, got {value!r}") from None
    return spec, overrides


def _parse_bool(v: str) -> bool:
    if v.lower() not in ("true", "false", "1", "0"):
        raise ValueError(v)
    return v.lower() in ("true", "1")


_PARSERS: dict[type, Callable[[str], Any]] = {int: int, float: float, bool: _parse_bool, str: str}


def _field_names(cls_or_spec) -> set[str]:
    cls = cls_or_spec.config_cls if isinstance(cls_or_spec, ModelSpec) else cls_or_spec
    return {f.name for f in dataclasses.fields(cls)}
