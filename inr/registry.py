"""The model registry: a name and a hand-assigned, never-reused id for every model family."""

from __future__ import annotations

import dataclasses
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
