"""Working memory of compiled programs: what XLA says a program needs, checked against what the device has."""

from __future__ import annotations

import contextlib
from pathlib import Path

import jax

from inr.errors import ResourceError

_LARGEST: dict[str, int] = {}   # the largest program checked in this process: {"what": ..., "bytes": ...}


def program_bytes(compiled) -> int:
    """Bytes a compiled program allocates when it runs, beyond its arguments: XLA's buffer assignment for
    temporaries and outputs, less outputs that reuse donated arguments (`alias`), plus its code."""
    m = compiled.memory_analysis()
    if m is None:   # a backend without the analysis
        return 0
    return int(m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.generated_code_size_in_bytes)


def available_bytes(device=None) -> int | None:
    """Memory a new allocation can take now on `device` (default: JAX's first): on CPU the kernel's
    MemAvailable, within the cgroup's limit when one is set; on an accelerator its allocator's limit less
    what is in use; None when the backend does not say."""
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return _host_available()
    stats = device.memory_stats() or {}
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))


def _host_available() -> int | None:
    free = None
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable:"))
        free = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):   # "max" (no limit) is not an int
        cgroup = Path("/sys/fs/cgroup")
        room = int((cgroup / "memory.max").read_text()) - int((cgroup / "memory.current").read_text())
        free = room if free is None else min(free, room)
    return free


def check_program(compiled, what: str, hint: str) -> int:
    """Raises ResourceError, before the program first runs, when its working memory exceeds what the device
    has available; returns that working memory in bytes. `what` names the program ("a training step at
    1280x720, 2 frames"), `hint` how to need less."""
    need = program_bytes(compiled)
    if need > _LARGEST.get("bytes", -1):
        _LARGEST.update(what=what, bytes=need)
    free = available_bytes()
    if free is not None and need > free:
        raise ResourceError(f"{what} needs {need / 1e9:.3g} GB of working memory and {free / 1e9:.3g} GB is "
                            f"available; {hint}")
    return need


def largest_program() -> tuple[str, int]:
    """(what, bytes) of the largest program `check_program` has seen in this process; ("", 0) if none."""
    return _LARGEST.get("what", ""), _LARGEST.get("bytes", 0)
