"""Variables as flat, canonically ordered (path, array) lists, and regex rules that pick tensors by path."""

from __future__ import annotations

import re
import zlib
from typing import Any, Iterable

import jax
import numpy as np


def path_str(path: tuple) -> str:
    """'params/block0/up/conv/kernel' for a pytree key path."""
    parts = []
    for k in path:
        parts.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
    return "/".join(parts)


def flatten(tree: Any) -> list[tuple[str, Any]]:
    """(path, leaf) pairs in sorted path order: the order tensors are written in a .nerva file."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return sorted(((path_str(p), x) for p, x in leaves), key=lambda kv: kv[0])


def unflatten(like: Any, values: dict[str, Any]) -> Any:
    """A pytree shaped like `like` whose leaves are `values[path]`."""
    paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(like)[0]]
    treedef = jax.tree_util.tree_structure(like)
    return jax.tree_util.tree_unflatten(treedef, [values[p] for p in paths])


def layout_crc(tree: Any) -> int:
    """CRC32 of the sorted paths and shapes: a file written for another parameter layout is refused."""
    text = ";".join(f"{p}:{'x'.join(map(str, np.shape(x)))}" for p, x in flatten(tree))
    return zlib.crc32(text.encode())


def first_match(path: str, rules: Iterable[tuple[str, Any]], default: Any = None) -> Any:
    """The value of the first (regex, value) rule whose regex fully matches `path`."""
    for pattern, value in rules:
        if re.fullmatch(pattern, path):
            return value
    return default
