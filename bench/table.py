"""Markdown tables for the benchmark scripts: columns are (row key, header, format string)."""

from __future__ import annotations


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Prints `rows` as a Markdown table; a None value prints as an em dash."""
    print(" | ".join(h for _, h, _ in columns))
    print(" | ".join("---" for _ in columns))
    for r in rows:
        print(" | ".join("—" if r[k] is None else f.format(r[k]) for k, _, f in columns))
