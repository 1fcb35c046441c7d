"""`nerva fit` and `nerva demo`: fit, compress, write the file, decode it back and report."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from codec import api
from codec.api import QuantPolicy
from codec.container import write_atomic
from codec.decoder import decode_frames, measure_file
from inr import registry
from inr.config import Geometry
from inr.sizing import DEFAULT_BPP
from inr.errors import ConfigError
from inr.video import Video, bundled_clip, read_video, write_video
from train import presets
from train.checkpoint import Checkpointer
from train.encode import Diverged, Encoded, encode, make_config, run_id
from train.loop import Interrupted
from train.progress import progress_for
from train.schedule import TrainConfig

# Test hook of tests/train/test_crash.py: SIGKILL the process right after the checkpoint of this global
# step is on disk. Killing from outside at a chosen step cannot be timed (a tiny fit runs a step in
# milliseconds, and a poller would land anywhere in the run), while the kill itself must be real: no
# `finally`, no atexit, no orbax close runs, exactly as when the machine dies.
KILL_AT_STEP_ENV = "NERVA_TEST_KILL_AT_STEP"


# The standard fit options' values when not given (the parser leaves them None: see check_fit_options);
# the pipeline's is the rate-distortion one where the family has it (check_fit_options)
FIT_DEFAULTS = {"bits": 8, "embed_bits": None, "prune": 0.0, "batch": 2, "lambda": 0.0, "pipeline": "fixed"}
PIPELINES = ("fixed", "rd", "rec")   # fixed-bit quantization + QAT; rate-distortion training on learned steps
# (train.rd); a posterior sample relative-entropy coded against a learned prior (train.variational)


def check_fit_options(args) -> None:
    """Refuses, before any work, a standard fit option the model's family does not honour
    (ModelSpec.fit_options) or that the chosen pipeline makes meaningless, then fills in the defaults of
    those not given. The pipeline, when not given: rd where the family has it, unless --bits or
    --embed-bits ask for fixed bit depths (--lambda implies rd). Under rd the target is --bpp, --lambda, or
    DEFAULT_BPP; --size then fixes the parameter count (otherwise the target sizes the model). Under fixed
    (and a family's own pipeline) --bpp sets the size, so it excludes --size."""
    spec = registry.parse(args.model)[0]
    for name in FIT_DEFAULTS:
        if getattr(args, name) is not None and name not in spec.fit_options:
            option = "--" + name.replace("_", "-")
            fields = ", ".join(sorted(registry.settable_fields(spec)))
            raise ConfigError(f"{option} does not apply to {spec.name} (its options are model fields, e.g. "
                              f"--model {spec.name}:FIELD=VALUE with FIELD one of {fields})")
    lam = getattr(args, "lambda")
    if lam is not None and args.pipeline == "fixed":
        raise ConfigError("--lambda does not apply to --pipeline fixed: the rate term needs learned steps "
                          "(--pipeline rd)")
    if args.pipeline is not None and args.pipeline not in spec.pipelines:
        raise ConfigError(f"--pipeline {args.pipeline} does not apply to {spec.name} (its pipelines: "
                          f"{', '.join(spec.pipelines)})")
    if getattr(args, "prior", None) is not None and "rec" not in spec.pipelines:
        raise ConfigError(f"--prior does not apply to {spec.name}: only a relative-entropy-coded model has a prior")
    if args.pipeline is None and "pipeline" in spec.fit_options:
        fixed_bits = args.bits is not None or args.embed_bits is not None
        args.pipeline = "fixed" if fixed_bits and lam is None and "fixed" in spec.pipelines else spec.pipelines[0]
    if args.pipeline == "rec":
        if args.size is not None:
            raise ConfigError("--size does not apply to --pipeline rec: the rate is set by --bpp (16-bit blocks), "
                              "the architecture by the prior")
        if args.bpp is None:
            args.bpp = DEFAULT_BPP
    if args.pipeline == "rd":
        if lam is not None and args.bpp is not None:
            raise ConfigError("--bpp with --lambda: a bpp target sets λ by itself during the fit; give one of them")
        for name in ("bits", "embed_bits"):   # rate-distortion training learns every tensor's steps
            if getattr(args, name) is not None:
                raise ConfigError(f"--{name.replace('_', '-')} does not apply to --pipeline rd: rate-distortion "
                                  "training learns every tensor's quantization step")
        if lam is None and args.bpp is None:
            args.bpp = DEFAULT_BPP
    elif args.size is not None and args.bpp is not None:
        raise ConfigError("--size with --bpp: without rate-distortion training the bpp target sets the size; "
                          "give one of them")
    for name, default in FIT_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def _train_config(args, model: str, config) -> TrainConfig:
    target = args.bpp if args.pipeline == "rd" and args.bpp else 0.0
    return presets.train_config(model, args.epochs, args.lr, args.prune, args.batch, args.seed, config=config,
                                rate_weight=getattr(args, "lambda"), target_bpp=target)


def make_fit_config(args, geometry: Geometry):
    """The model config a fit's options ask for: --size, or a size for the --bpp target (under --pipeline
    rd with room for the rate term: train.presets.rd_config), or the preset's size; under rd, with the
    family's fields for the target rate."""
    if args.pipeline == "rd" and args.bpp:
        return presets.rd_config(args.model, geometry, args.bpp, n_params=args.size)
    size = None if args.bpp else (args.size or presets.preset(args.model).size)
    return make_config(args.model, geometry, n_params=size, bpp=args.bpp, bits=args.bits)


def _progress(quiet: bool):
    return None if quiet else progress_for(sys.stderr)


def checkpoint_dir(output: Path) -> Path:
    return output.with_name(output.name + ".ckpt")


def check_output(output: Path, source: Path | None = None) -> None:
    """Refuses, before any work, an output that would destroy the input or cannot be written: the input
    itself (also through a link, or the checkpoint folder beside it), a place inside an input folder, an
    existing directory, a missing or read-only directory."""
    if source is not None and source.exists():
        if output.exists() and os.path.samefile(source, output):
            raise ConfigError(f"output {output} is the input video itself; choose another name")
        # where the file and its checkpoints will go: a link at `output` is replaced, not followed
        src, out = source.resolve(), output.parent.resolve() / output.name
        if source.is_dir() and out.is_relative_to(src):
            raise ConfigError(f"output {output} lies inside the input folder {source}; write it elsewhere")
        if src.is_relative_to(checkpoint_dir(out)):
            raise ConfigError(f"the input {source} lies where the fit keeps its checkpoints "
                              f"({checkpoint_dir(output)}); choose another output name")
    if output.is_dir():
        raise ConfigError(f"output {output} is a directory; give a file name, e.g. {output / 'clip.nerva'}")
    if not output.parent.is_dir():
        raise ConfigError(f"output directory {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write to the output directory {output.parent}")
    ckpt = checkpoint_dir(output)
    if ckpt.exists() and not ckpt.is_dir():
        raise ConfigError(f"{ckpt} (where the fit keeps its checkpoints) exists and is not a directory")


def remove_stale_temps(output: Path) -> None:
    """Deletes the temporary siblings (`.NAME.XXXXXXXX.tmp`, codec.container.write_atomic's) that a run
    killed while writing `output` left behind."""
    for tmp in output.parent.glob(f".{glob.escape(output.name)}.????????.tmp"):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)


def _checkpointer(directory: Path, rid: str, every: int) -> Checkpointer:
    kill_at = os.environ.get(KILL_AT_STEP_ENV)
    return Checkpointer(directory, rid, every) if not kill_at else _KilledAt(directory, rid, every, int(kill_at))


class _KilledAt(Checkpointer):
    """The KILL_AT_STEP_ENV test hook: checkpoints the first step at or past `kill_at`, waits until that
    checkpoint is committed (so the test knows where the resume starts), then SIGKILLs the process."""

    def __init__(self, directory, rid, every, kill_at: int):
        super().__init__(directory, rid, every)
        self.kill_at = kill_at

    def maybe_save(self, step: int, state, force: bool = False) -> None:
        super().maybe_save(step, state, force=force or step >= self.kill_at)
        if step >= self.kill_at:
            self.wait()
            os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def ctrl_c_stops():
    """Within: the first Ctrl-C (SIGINT) asks the loop to checkpoint and stop after the step under way
    (the yielded callable turns True); a second one interrupts at once. One pressed after the last step
    lets the finished fit be written. Outside the main thread (no signal handlers there), Ctrl-C keeps
    its default action."""
    asked = threading.Event()

    def handler(signum, frame):
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()
    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:   # not the main thread
        yield asked.is_set
        return
    try:
        yield asked.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def fit_video(video: Video, output: Path, args, checkpoint_every: int = 500, resume: bool = False,
              source: Path | None = None) -> dict:
    """Fits `video` (read from `source`, if given, which must survive), writes `output` atomically (bytes
    that train.encode.encode has read back), decodes it and returns the summary row. Ctrl-C checkpoints and
    raises train.loop.Interrupted; a diverged fit raises Diverged and leaves neither output nor checkpoint."""
    check_output(output, source)
    remove_stale_temps(output)
    if args.pipeline == "rec":
        from train import rec_cli
        try:
            extra, coded, asset = rec_cli.fit_rec(video, output, args, resume)
        except rec_cli.variational.Interrupted as e:
            raise Interrupted(e.step, e.total) from None
        rep = measure_file(output, video.frames, priors=[asset.path])
        return {**_report_row(output, rep), "float_psnr": None, "train_fps": float("nan"), "lambda": None,
                "step_scale": 1.0, **extra, "pipeline": "rec", "target_bpp": args.bpp}
    frames = video.frames
    geometry = Geometry.of(*frames.shape[:3], fps=video.fps)
    config = make_fit_config(args, geometry)
    train = _train_config(args, args.model, config)
    policy = QuantPolicy(bits=args.bits, embed_bits=args.embed_bits, embeddings=registry.parse(args.model)[0].embeddings)
    ckpt_dir = checkpoint_dir(output)
    if not resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    elif not ckpt_dir.is_dir():
        print(f"nerva: no checkpoint in {ckpt_dir}; starting from scratch", file=sys.stderr)
    ckpt = _checkpointer(ckpt_dir, run_id(config, train, policy, frames), checkpoint_every)
    try:
        with ctrl_c_stops() as stop:
            enc = encode(config, frames, train, policy, progress=_progress(args.quiet), checkpointer=ckpt,
                         stop=stop)
    except Diverged:
        ckpt.close(remove=True)   # resuming would only diverge again
        raise
    finally:
        ckpt.close()
    write_atomic(output, enc.data)   # encode checked that these bytes read back
    ckpt.close(remove=True)
    target = args.bpp if args.pipeline == "rd" else None   # under fixed bits --bpp only sized the model
    return {**summarize(output, frames, enc), "pipeline": args.pipeline, "target_bpp": target}


def summarize(path: Path, source: np.ndarray, enc: Encoded) -> dict:
    """Decodes the written file (not the encoder's copy) batch by batch and measures it against the source
    frames (T, H, W, 3) uint8, never holding a second copy of the clip."""
    rep = measure_file(path, source)
    return {**_report_row(path, rep), "float_psnr": enc.fit.float_psnr,
            "params": sum(int(np.prod(x.symbols.shape)) for x in enc.quantized.values()),
            "encode_s": enc.fit.seconds, "train_fps": enc.fit.train_frames_per_s,
            "lambda": enc.fit.final_lambda, "step_scale": enc.fit.step_scale}


def _report_row(path: Path, rep) -> dict:
    """The summary row's fields measured on the written file (codec.decoder.FileReport)."""
    g, q = rep.config.geometry, rep.quality
    return {"codec": registry.spec_of(rep.config).name, "file": str(path), "bytes": rep.bytes,
            "frames": g.frames, "height": g.height, "width": g.width,
            "bpp": rep.bpp, "psnr": q.psnr, "psnr_y": q.psnr_y, "ms_ssim": q.ms_ssim,
            "ms_ssim_scales": q.ms_ssim_scales, "decode_fps": rep.decode_fps, "config": rep.config.to_dict()}


def print_summary(row: dict, as_json: bool) -> None:
    fl = f"   float model {row['float_psnr']:.2f} dB" if row["float_psnr"] is not None else ""
    print(f"model    {row['codec']}: {row['params']:,} parameters; {row['frames']} frames "
          f"{row['width']}x{row['height']}")
    lam = f"; λ {row['lambda']:.4g}" if row.get("lambda") is not None else ""
    if row.get("step_scale", 1.0) != 1.0:
        lam += f", steps x{row['step_scale']:.3f} to land on the target"
    aim = f" (target {row['target_bpp']:g})" if row.get("target_bpp") else ""
    print(f"file     {row['file']}: {row['bytes']:,} bytes, bpp {row['bpp']:.4f}{aim}, "
          f"{8 * row['bytes'] / max(row['params'], 1):.2f} bits per parameter{lam}")
    print(f"quality  PSNR {row['psnr']:.2f} dB   MS-SSIM {row['ms_ssim']:.4f} "
          f"({row['ms_ssim_scales']} scales){fl}")
    if row.get("prior"):
        print(f"prior    {row['prior']} ({row['prior_bytes']:,} bytes, shared, not in the file); "
              f"{row['blocks']:,} blocks of 16 bits")
    print(f"encode   {row['encode_s']:.1f} s" + (f" (training {row['train_fps']:.1f} frames/s)"
                                                   if row["train_fps"] == row["train_fps"] else ""))
    print(f"decode   {row['decode_fps']:.1f} frames/s")
    if as_json:
        print(json.dumps({k: v for k, v in row.items() if k != "config"} | {"config": row["config"]}))


def cmd_fit(args) -> int:
    start, stop = args.frames or (0, None)
    source, output = Path(args.input), Path(args.output)
    check_fit_options(args)        # before reading the video, so a refusal costs nothing
    check_output(output, source)
    video = read_video(source, start, stop, size=args.resize)
    try:
        row = fit_video(video, output, args, args.checkpoint_every, args.resume, source=source)
    except Interrupted as e:
        print(f"nerva: interrupted at step {e.step} of {e.total}; checkpoint saved in "
              f"{checkpoint_dir(output)}; run the same command with --resume to continue", file=sys.stderr)
        return 130
    print_summary(row, args.json)
    return 0


def cmd_demo(args) -> int:
    """Fits the bundled carphone clip with the demo preset, writes the file and a decoded video."""
    check_fit_options(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    clip = bundled_clip("carphone")
    print(f"nerva demo: fitting {clip.name} with {args.model}; results go to {out}/")
    video = read_video(clip)
    try:
        row = fit_video(video, out / "carphone.nerva", args)
    except Interrupted as e:
        print(f"nerva: interrupted at step {e.step} of {e.total}; the demo starts over when run again",
              file=sys.stderr)
        shutil.rmtree(checkpoint_dir(out / "carphone.nerva"), ignore_errors=True)
        return 130
    config, variables = api.load(out / "carphone.nerva")
    write_video(out / "carphone_decoded.mp4", decode_frames(config, variables), fps=video.fps)
    print_summary(row, args.json)
    print(f"decoded  {out / 'carphone_decoded.mp4'}  (inspect the file with: nerva info {out}/carphone.nerva)")
    return 0
