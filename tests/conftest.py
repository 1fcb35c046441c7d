"""Test settings: fast XLA compiles, a persistent compile cache, and small shared clips."""

import os
from pathlib import Path

# Compile-friendly tests: most time in a tiny-model test is XLA compilation, not running.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
_cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "nerva-tests-jax"))
if os.environ.get("PYTEST_XDIST_WORKER"):   # JAX writes cache entries in place, unlocked: one directory
    _cache = f"{_cache}-{os.environ['PYTEST_XDIST_WORKER']}"   # per concurrently compiling test process
os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from inr.video import bundled_clip, read_video, synthetic_clip  # noqa: E402


@pytest.fixture(scope="session")
def carphone_small() -> np.ndarray:
    """First 8 frames of the bundled carphone clip, downscaled to 48×64 (H×W): a tiny real clip."""
    return read_video(bundled_clip("carphone"), 0, 8, size=(48, 64)).frames


@pytest.fixture(scope="session")
def synthetic() -> np.ndarray:
    """8 frames of 32×48 smooth moving pattern."""
    return synthetic_clip(8, 32, 48)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops in-memory compiled programs after each test module: with every model family the suite's
    process otherwise keeps growing (6 GB seen); the persistent cache still serves recompilations."""
    yield
    import jax

    from codec import decoder
    from train import loop
    for fn in (loop._step_program, loop._eval_program):
        fn.cache_clear()
    if hasattr(decoder, "_render_fn") and hasattr(decoder._render_fn, "cache_clear"):
        decoder._render_fn.cache_clear()
    jax.clear_caches()
