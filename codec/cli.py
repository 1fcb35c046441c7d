"""`nerva decode` and `nerva info`: the decode side of the CLI (imports neither optax nor orbax)."""

from __future__ import annotations

import time

import numpy as np

from codec import api, container, entropy
from codec.player import Player
from inr import registry
from inr.errors import ConfigError
from inr.video import write_video


def cmd_decode(args) -> int:
    config, variables = api.load(args.file)
    t = config.geometry.frames
    start, stop = args.frames or (0, None)
    stop = t if stop is None else stop
    if stop > t:
        raise ConfigError(f"--frames {start}:{stop} runs past the file's {t} frames")
    t0 = time.perf_counter()
    with Player((config, variables), batch=args.batch) as player:   # the engine `nerva play` uses
        frames = player.frames(start, stop)
    seconds = time.perf_counter() - t0
    out = write_video(args.output, frames, fps=config.geometry.fps, lossless=args.lossless)
    print(f"decoded {frames.shape[0]} frames ({config.geometry.width}x{config.geometry.height}) "
          f"in {seconds:.2f} s (compile included) -> {out}")
    return 0


def describe(data: bytes) -> tuple[list[str], dict]:
    """Lines describing a .nerva file (config, byte breakdown, bpp) and its decoded collections."""
    config, collections, sections = api.parse(data)
    spec = registry.spec_of(config)
    g = config.geometry
    lines = [f"model     {spec.name} (id {spec.model_id}): {spec.description}",
             f"video     {g.frames} frames, {g.width}x{g.height}, {g.fps:.3f} fps",
             f"file      {len(data)} bytes, bpp {8 * len(data) / g.pixels:.5f} (8·bytes / (T·H·W))",
             "config    " + ", ".join(f"{k}={v}" for k, v in config.to_dict().items() if k != "geometry"),
             "", f"{'section':<32}{'offset':>8}{'bytes':>10}"]
    lines.append(f"{'preamble (magic, version, id)':<32}{0:>8}{7:>10}")
    for s in sections:
        name = container.KIND_NAMES.get(s.kind, f"kind {s.kind}")
        if s.kind in (container.TENSORS, container.RESIDUAL):
            from codec.tensors import collection_name, residual_reference
            name = f"tensors: {collection_name(s.body)}"
            if s.kind == container.RESIDUAL:
                name = f"residual: {collection_name(s.body)} - {residual_reference(s.body)}"
        lines.append(f"{name:<32}{s.offset:>8}{s.size:>10}")
    lines.append(f"{'crc32':<32}{len(data) - 4:>8}{4:>10}")
    return lines, collections


def tensor_lines(collections) -> list[str]:
    lines = ["", f"{'tensor':<44}{'shape':>16}{'bits':>5}{'model':>10}{'side B':>8}{'payload B':>11}"
             f"{'bits/w':>8}"]
    for name, (_, infos) in sorted(collections.items()):
        for i in infos:
            n = max(int(np.prod(i.shape)), 1)
            kind = entropy.KIND_NAMES.get(i.model.kind, str(i.model.kind))
            lines.append(f"{name + '/' + i.path:<44}{'x'.join(map(str, i.shape)):>16}{i.bits:>5}"
                         f"{kind:>10}{i.side_bytes:>8}{i.ideal_bits / 8:>11.1f}{i.ideal_bits / n:>8.2f}")
    lines.append("(payload B is the ideal code length under the file's model; the coder adds < 0.1%)")
    return lines


def cmd_info(args) -> int:
    lines, collections = describe(api.read_file(args.file))
    if args.tensors:
        lines += tensor_lines(collections)
    print("\n".join(lines))
    return 0
