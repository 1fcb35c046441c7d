"""`nerva fit` and `nerva demo`: fit, compress, write the file, decode it back and report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from codec import api
from codec.api import QuantPolicy
from codec.container import write_atomic
from codec.decoder import decode_frames, measure_file
from inr import registry
from inr.config import Geometry
from inr.errors import ConfigError
from inr.video import Video, bundled_clip, read_video, write_video
from train import presets
from train.checkpoint import Checkpointer
from train.encode import Encoded, encode, make_config, run_id
from train.schedule import TrainConfig


def _train_config(args, model: str, config) -> TrainConfig:
    return presets.train_config(model, args.epochs, args.lr, args.prune, args.batch, args.seed, config=config)


def _progress(quiet: bool):
    if quiet:
        return None
    return lambda total: tqdm(total=total, unit="step", dynamic_ncols=True, leave=True)


def fit_video(video: Video, output: Path, args, checkpoint_every: int = 500, resume: bool = False) -> dict:
    """Fits `video`, writes `output` atomically, decodes it back and returns the summary row."""
    if not output.parent.is_dir():
        raise ConfigError(f"output directory {output.parent} does not exist")
    frames = video.frames
    geometry = Geometry.of(*frames.shape[:3], fps=video.fps)
    size = None if args.bpp else (args.size or presets.preset(args.model).size)
    config = make_config(args.model, geometry, n_params=size, bpp=args.bpp, bits=args.bits)
    train = _train_config(args, args.model, config)
    policy = QuantPolicy(bits=args.bits, embed_bits=args.embed_bits)
    ckpt_dir = output.with_name(output.name + ".ckpt")
    if not resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    ckpt = Checkpointer(ckpt_dir, run_id(config, train, policy, frames), checkpoint_every)
    try:
        enc = encode(config, frames, train, policy, progress=_progress(args.quiet), checkpointer=ckpt)
    finally:
        ckpt.close()
    write_atomic(output, enc.data)
    ckpt.close(remove=True)
    return summarize(output, frames, enc)


def summarize(path: Path, source: np.ndarray, enc: Encoded) -> dict:
    """Decodes the written file (not the encoder's copy), measures it against the source frames."""
    rep = measure_file(path, source)
    g, q = rep.config.geometry, rep.quality
    return {
        "codec": registry.spec_of(rep.config).name, "file": str(path), "bytes": rep.bytes,
        "frames": g.frames, "height": g.height, "width": g.width,
        "bpp": rep.bpp, "psnr": q.psnr, "psnr_y": q.psnr_y, "ms_ssim": q.ms_ssim,
        "ms_ssim_scales": q.ms_ssim_scales, "float_psnr": enc.fit.float_psnr,
        "params": sum(int(np.prod(x.symbols.shape)) for x in enc.quantized.values()),
        "encode_s": enc.fit.seconds, "train_fps": enc.fit.train_frames_per_s, "decode_fps": rep.decode_fps,
        "config": rep.config.to_dict(),
    }


def print_summary(row: dict, as_json: bool) -> None:
    fl = f"   float model {row['float_psnr']:.2f} dB" if row["float_psnr"] is not None else ""
    print(f"model    {row['codec']}: {row['params']:,} parameters; {row['frames']} frames "
          f"{row['width']}x{row['height']}")
    print(f"file     {row['file']}: {row['bytes']:,} bytes, bpp {row['bpp']:.4f}")
    print(f"quality  PSNR {row['psnr']:.2f} dB   MS-SSIM {row['ms_ssim']:.4f} "
          f"({row['ms_ssim_scales']} scales){fl}")
    print(f"encode   {row['encode_s']:.1f} s (training {row['train_fps']:.1f} frames/s)")
    print(f"decode   {row['decode_fps']:.1f} frames/s")
    if as_json:
        print(json.dumps({k: v for k, v in row.items() if k != "config"} | {"config": row["config"]}))


def cmd_fit(args) -> int:
    start, stop = args.frames or (0, None)
    video = read_video(args.input, start, stop, size=args.resize)
    row = fit_video(video, Path(args.output), args, args.checkpoint_every, args.resume)
    print_summary(row, args.json)
    return 0


def cmd_demo(args) -> int:
    """Fits the bundled carphone clip with the demo preset, writes the file and a decoded video."""
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    args.model = args.model or presets.DEMO_MODEL
    args.epochs = args.epochs or presets.DEMO_EPOCHS
    clip = bundled_clip("carphone")
    print(f"nerva demo: fitting {clip.name} with {args.model}; results go to {out}/")
    video = read_video(clip)
    row = fit_video(video, out / "carphone.nerva", args)
    config, variables = api.load(out / "carphone.nerva")
    write_video(out / "carphone_decoded.mp4", decode_frames(config, variables), fps=video.fps)
    print_summary(row, args.json)
    print(f"decoded  {out / 'carphone_decoded.mp4'}  (inspect the file with: nerva info {out}/carphone.nerva)")
    return 0
