"""Markdown tables for the benchmark scripts: columns are (row key, header, format string)."""

from __future__ import annotations

import datetime
import os
import platform
import sys


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Prints `rows` as a Markdown table; a None value prints as an em dash."""
    print(" | ".join(h for _, h, _ in columns))
    print(" | ".join("---" for _ in columns))
    for r in rows:
        print(" | ".join("—" if r[k] is None else f.format(r[k]) for k, _, f in columns))


def provenance(cpu_busy_before: float | None = None) -> dict:
    """Where and when a benchmark ran: recorded with its figures."""
    import jax
    return {"jax": jax.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
            "cpu_busy_before": cpu_busy_before, "python": sys.version.split()[0],
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
