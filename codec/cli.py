"""`nerva decode` and `nerva info`: the decode side of the CLI (imports neither optax nor orbax)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from codec import api, assets, container, entropy
from codec.bytesio import FormatError
from codec.player import Player
from inr import registry
from inr.errors import ConfigError, VideoError
from inr.video import check_output, write_video


def cmd_decode(args) -> int:
    """Decodes a frame range of a .nerva file straight into the output video: the output path is vetted
    before anything is decoded, frames stream from the player to the encoder (never all in memory), and
    the output appears only once complete (inr.video.write_video)."""
    _check_decode_output(args.file, args.output, args.lossless)
    config, variables = api.load(args.file, _priors(args))
    g = config.geometry
    start, stop = frame_range(args.frames, g.frames)
    t0 = time.perf_counter()
    with Player((config, variables), batch=args.batch, cache_mb=None) as player:   # `nerva play`'s engine
        frames = (player.frame(i) for i in range(start, stop))
        out = write_video(args.output, frames, fps=g.fps, lossless=args.lossless,
                          shape=(stop - start, g.height, g.width))
    seconds = time.perf_counter() - t0
    print(f"decoded {stop - start} frames ({g.width}x{g.height}) in {seconds:.2f} s (compile and "
          f"writing included) -> {out}")
    return 0


def _priors(args) -> list:
    """--prior, where given: another place to find the file's prior (codec.assets.find)."""
    return [args.prior] if getattr(args, "prior", None) else []


def frame_range(frames: tuple[int, int | None] | None, t: int) -> tuple[int, int]:
    """--frames A:B (B None: to the end) as [start, stop) within a file of t frames, or a usage error."""
    start, stop = frames or (0, None)
    shown = f"--frames {start}:{'' if stop is None else stop}"
    if start >= t:
        raise ConfigError(f"{shown} starts past the file's last frame (it has {t} frames, 0..{t - 1})")
    if stop is not None and stop > t:
        raise ConfigError(f"{shown} runs past the file's {t} frames")
    return start, t if stop is None else stop


def _check_decode_output(source, output, lossless: bool) -> None:
    """Refuses, before any decoding, an output that is the source file itself or that write_video would
    refuse (unsupported suffix, a non-empty directory, a file where a PNG folder goes)."""
    src, out = Path(source), Path(output)
    if src.is_file() and out.exists() and out.samefile(src):   # a symlink or hard link to it too
        raise ConfigError(f"-o {output} is the input file itself; decoding would overwrite it")
    try:
        check_output(output, lossless)
    except VideoError as e:
        raise ConfigError(f"-o: {e}") from None


def describe(data: bytes, priors=()) -> tuple[list[str], dict]:
    """Lines describing a .nerva file (config, byte breakdown, bpp) and its decoded collections; for a file coded
    against a prior, the prior and the bytes with it (looked for as decoding does, `priors` first)."""
    config, collections, sections = api.parse(data)
    spec = registry.spec_of(config)
    g = config.geometry
    lines = [f"model     {spec.name} (id {spec.model_id}): {spec.description}",
             f"video     {g.frames} frames, {g.width}x{g.height}, {g.fps:.3f} fps",
             f"file      {len(data)} bytes, bpp {8 * len(data) / g.pixels:.5f} (8·bytes / (T·H·W)), "
             f"format version {container.format_version(data)}",
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
    rec = api.rec_section(config, sections)
    if rec is not None:
        lines.append("")
        lines.append(f"samples   {rec.indices.size:,} relative-entropy-coded blocks of 16 bits ({2 * rec.indices.size:,} "
                     f"bytes), seed {rec.seed}")
        try:
            asset = assets.find(rec.asset_id, rec.digest, priors)
            total = len(data) + asset.size
            lines.append(f"prior     {rec.asset_id} (sha256 {rec.digest.hex()[:16]}...): {asset.path}, {asset.size:,} "
                         f"bytes shared; file + prior {total:,} bytes, bpp {8 * total / g.pixels:.5f}")
        except FormatError:
            lines.append(f"prior     {rec.asset_id} (sha256 {rec.digest.hex()[:16]}...): not found (pass --prior)")
    return lines, collections


def tensor_lines(collections) -> list[str]:
    lines = ["", f"{'tensor':<44}{'shape':>16}{'bits':>5}{'steps':>6}{'model':>10}{'side B':>8}"
             f"{'payload B':>11}{'bits/w':>8}"]
    for name, (quantized, infos) in sorted(collections.items()):
        for i in infos:
            n = max(int(np.prod(i.shape)), 1)
            kind = entropy.KIND_NAMES.get(i.model.kind, str(i.model.kind))
            lines.append(f"{name + '/' + i.path:<44}{'x'.join(map(str, i.shape)):>16}{i.bits:>5}"
                         f"{quantized[i.path].steps.size:>6}{kind:>10}{i.side_bytes:>8}"
                         f"{i.ideal_bits / 8:>11.1f}{i.ideal_bits / n:>8.2f}")
    lines.append("(steps: per output channel, or 1 for the whole tensor; a residual tensor reuses its "
                 "reference's. payload B: the ideal code length under the file's model; the coder adds < 0.1%)")
    return lines


def cmd_info(args) -> int:
    lines, collections = describe(api.read_file(args.file), _priors(args))
    if args.tensors:
        lines += tensor_lines(collections)
    print("\n".join(lines))
    return 0
