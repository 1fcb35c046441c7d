"""Keeps the first row of every run key in a results file (what a resumed `nerva rd` keeps) and lists the rest.

    python bench/first_rows.py bench/results/nirvana_carphone.jsonl    # rewrites the file, prints what it dropped

A file from `nerva rd` never holds a key twice (a resumed sweep skips finished keys and `append_row`
refuses a second one); this repairs files written before that check, keeping each kept line's bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from codec.container import write_atomic


def first_rows(lines: list[str]) -> tuple[list[str], list[tuple[int, str]]]:
    """(the lines whose key was not seen before, [(1-based line number, key) of every later repeat])."""
    kept, dropped, seen = [], [], set()
    for number, line in enumerate(lines, start=1):
        key = json.loads(line)["key"]
        if key in seen:
            dropped.append((number, key))
        else:
            seen.add(key)
            kept.append(line)
    return kept, dropped


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path)
    args = p.parse_args(argv)
    lines = args.file.read_text().splitlines()
    kept, dropped = first_rows(lines)
    for number, key in dropped:
        print(f"{args.file}:{number}: dropped, repeats {key}")
    write_atomic(args.file, "".join(line + "\n" for line in kept).encode())
    print(f"{args.file}: kept {len(kept)} of {len(lines)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
