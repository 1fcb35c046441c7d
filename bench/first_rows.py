"""Keeps the first row of every run key in a results file (what a resumed `nerva rd` keeps) and lists the rest.

    python bench/first_rows.py bench/results/nirvana_carphone.jsonl    # rewrites the file, prints what it dropped
    python bench/first_rows.py FILE --drop-codecs nerv+rd,cam+rd       # and drops those codecs' rows
    python bench/first_rows.py FILE --drop-key 'hnerv+rd|carphone|120|bpp=0.02,epochs=30,seed=0'   # and that run's

A file from `nerva rd` never holds a key twice (a resumed sweep skips finished keys and `append_row`
refuses a second one); this repairs files written before that check, keeping each kept line's bytes.
`--drop-codecs` removes every row of the named codecs, so that the next sweep into the file measures them
again (a resumed sweep would keep rows from older code); `--drop-key` (repeatable) removes one run's row, for a
change that affects only that run; bench/README records where each was used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from codec.container import write_atomic


def first_rows(lines: list[str], drop_codecs: frozenset = frozenset(),
               drop_keys: frozenset = frozenset()) -> tuple[list[str], list[tuple[int, str]]]:
    """(the lines whose key was not seen before, is not in `drop_keys` and whose codec is not in
    `drop_codecs`, [(1-based line number, key) of every other line])."""
    kept, dropped, seen = [], [], set()
    for number, line in enumerate(lines, start=1):
        row = json.loads(line)
        key = row["key"]
        if key in seen or key in drop_keys or row.get("codec") in drop_codecs:
            dropped.append((number, key))
        else:
            seen.add(key)
            kept.append(line)
    return kept, dropped


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path)
    p.add_argument("--drop-codecs", default="", help="comma list of codecs whose rows are dropped too")
    p.add_argument("--drop-key", action="append", default=[], help="a run key whose row is dropped too (repeatable)")
    args = p.parse_args(argv)
    lines = args.file.read_text().splitlines()
    drop = frozenset(c for c in args.drop_codecs.split(",") if c)
    kept, dropped = first_rows(lines, drop, frozenset(args.drop_key))
    seen = {json.loads(line)["key"] for line in kept}
    for number, key in dropped:
        why = f"repeats {key}" if key in seen else (f"key {key}" if key in args.drop_key else f"codec of {key}")
        print(f"{args.file}:{number}: dropped, " + why)
    write_atomic(args.file, "".join(line + "\n" for line in kept).encode())
    print(f"{args.file}: kept {len(kept)} of {len(lines)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
