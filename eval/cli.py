"""The `nerva` command: argument parsing and dispatch; each subcommand's work lives in its own package.

Handlers are imported lazily so that `nerva decode`, `info` and `play` never import optax or orbax.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

from codec.decoder import DEFAULT_BATCH
from inr.errors import ConfigError, NervaError
from inr.sizing import DEFAULT_BPP, MAX_PARAMS


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line and exit status 2."""

    def error(self, message: str):
        raise ConfigError(message)


# Bounds of the numeric options: nan, inf and values past these are usage errors, before any work starts
# --size / --sizes: at most inr.sizing.MAX_PARAMS parameters (a --bpp target is held to it when sized)
MAX_FRAME_INDEX = 10**9  # --frames / --reference-start: 10^9 frames is 1 year at 30 fps
MAX_SIDE = 16384         # --resize: a side of 16K pixels
MAX_EPOCHS = 10**5
MAX_LR = 1.0             # a peak Adam learning rate above 1 only diverges (the presets use 1e-3-3e-2)
MAX_BPP = 24.0           # raw 8-bit RGB is 24 bits per pixel
MAX_BATCH = 1024         # frames per step or per forward pass
MAX_LAMBDA = 1e4         # λ in MSE per bit per pixel: at 1e4 one bit per frame outweighs any distortion
MAX_CACHE_MB = 1e6       # about 1 TB
_SHOWN = 40              # characters of a bad value quoted in a message (a 5,000-digit number stays one line)
_INT = re.compile(r"[+-]?[0-9]{1,30}")   # ASCII digits: int() also takes "١٢", "1_0" and " 1 "


def _shown(text: str) -> str:
    """`text` as a repr of at most about 2·_SHOWN characters: cut by characters, then (control or astral
    characters repr as up to 10 each) shortened until the repr fits."""
    cut = text if len(text) <= _SHOWN else text[:_SHOWN]
    while len(repr(cut)) > 2 * _SHOWN:
        cut = cut[:-1]
    return repr(cut if cut == text else cut + "...")


def _number(text: str, kind=float) -> float | int:
    """`text` as a finite number (`kind` int: at most 30 ASCII digits, no fraction or exponent)."""
    try:
        if kind is int and not _INT.fullmatch(text):
            raise ValueError(text)   # int() of more than 4300 digits raises ValueError too
        v = int(text) if kind is int else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {_shown(text)}") \
            from None
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {_shown(text)}")
    return v


def _in_range(v, text: str, lo, hi, lo_open: bool = False):
    """`v` if lo <= v <= hi (lo < v with lo_open), else a usage error quoting `text`."""
    if v <= lo if lo_open else v < lo:
        raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo}: {_shown(text)}")
    if v > hi:
        span = f"({lo}, {hi:g}]" if lo_open else f"{lo}..{hi}"
        raise argparse.ArgumentTypeError(f"must lie in {span}: {_shown(text)}")
    return v


def parse_size(text: str) -> int:
    """'0.2M' -> 200000, '150k' -> 150000, '3000' -> 3000 (parameters, 1..MAX_PARAMS)."""
    scale = {"k": 1e3, "m": 1e6}.get(text[-1:].lower(), 1)
    try:
        v = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {_shown(text)} (try 0.2M or 150k)") from None
    if not math.isfinite(v):   # checked as a float: int(inf) raises OverflowError, int(nan) ValueError
        raise argparse.ArgumentTypeError(f"size must be a finite number: {_shown(text)}")
    if v > MAX_PARAMS:
        raise argparse.ArgumentTypeError(f"size must be at most {MAX_PARAMS:,} parameters: {_shown(text)}")
    if int(v) <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {_shown(text)}")
    return int(v)


def parse_range(text: str) -> tuple[int, int | None]:
    """'A:B' -> (A, B); 'A:' -> (A, None); ':B' -> (0, B); 0 <= A < B <= MAX_FRAME_INDEX."""
    a, sep, b = text.partition(":")
    usage = f"not a frame range: {_shown(text)} (use A:B with 0 <= A < B <= {MAX_FRAME_INDEX:.0e})"
    if not sep or not re.fullmatch(r"[0-9]{0,10}", a) or not re.fullmatch(r"[0-9]{0,10}", b):
        raise argparse.ArgumentTypeError(usage)   # ASCII digits only: int() also takes "²", "٣", "1_0", " 1"
    start, stop = int(a or 0), (int(b) if b else None)
    if (stop is not None and stop <= start) or max(start, stop or 0) > MAX_FRAME_INDEX:
        raise argparse.ArgumentTypeError(usage)
    return start, stop


def parse_wh(text: str) -> tuple[int, int]:
    """'320x180' -> (H=180, W=320), each side 1..MAX_SIDE."""
    w, _, h = text.lower().partition("x")
    if not re.fullmatch(r"[0-9]{1,6}", w) or not re.fullmatch(r"[0-9]{1,6}", h):
        raise argparse.ArgumentTypeError(f"not a frame size: {_shown(text)} (use WxH, e.g. 320x180)")
    hw = int(h), int(w)
    if min(hw) < 1 or max(hw) > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"frame size sides must lie in 1..{MAX_SIDE}: {_shown(text)}")
    return hw


def _fraction(text: str) -> float:
    v = _number(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1): {_shown(text)}")
    return v


def _int_in(lo: int, hi: int):
    """An argparse type: an integer in [lo, hi]."""
    def parse(text: str) -> int:
        return _in_range(_number(text, int), text, lo, hi)
    parse.__name__ = "integer"
    return parse


def _float_in(hi: float):
    """An argparse type: a finite number in (0, hi] (nan and inf refused)."""
    def parse(text: str) -> float:
        return _in_range(_number(text), text, 0, hi, lo_open=True)
    parse.__name__ = "number"
    return parse


_bits = _int_in(1, 16)
_port = _int_in(0, 65535)
_seed = _int_in(0, 2**32 - 1)   # jax.random.key takes a 32/64-bit seed; a larger int overflows inside it
_batch = _int_in(1, MAX_BATCH)


def _sizes(text: str) -> tuple[int, ...]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items or not all(re.fullmatch(r"[0-9]{1,10}", x) for x in items):
        raise argparse.ArgumentTypeError(f"not a list of parameter counts: {_shown(text)}")
    sizes = tuple(sorted({int(x) for x in items}))
    if sizes[0] <= 0 or sizes[-1] > MAX_PARAMS:
        raise argparse.ArgumentTypeError(f"parameter counts must lie in 1..{MAX_PARAMS:,}: {_shown(text)}")
    return sizes


def _bpp_range(text: str) -> tuple[float, float]:
    m = re.fullmatch(r"\s*([0-9.eE+-]{1,20})\s*:\s*([0-9.eE+-]{1,20})\s*", text)
    try:
        lo, hi = (float(m.group(1)), float(m.group(2))) if m else (math.nan, math.nan)
    except ValueError:
        lo = hi = math.nan
    if not (0 < lo < hi <= MAX_BPP):
        raise argparse.ArgumentTypeError(f"not a bpp range LO:HI with 0 < LO < HI <= {MAX_BPP:g}: {_shown(text)}")
    return lo, hi


# `nerva demo`: the bundled carphone clip, fitted end to end within a few minutes on 2 CPU cores. NeRV, because
# at equal wall time it beats HNeRV on this CPU (bench/fit.py on carphone at 100k parameters: NeRV 150 epochs
# 32.05 dB at 0.268 bpp in 327 s, training 63 frames/s, decoding 150 frames/s; HNeRV 60 epochs 30.44 dB at
# 0.243 bpp in 365 s, 23 and 90 frames/s): XLA:CPU runs HNeRV's 5×5 convolutions on few channels at a small
# fraction of peak. 120 epochs leave room for a slower machine.
DEMO_MODEL = "nerv"
DEMO_EPOCHS = 120


def add_fit_options(p: argparse.ArgumentParser, model: str = "hnerv", epochs: float | None = None) -> None:
    """Options shared by `fit` and `demo` (`epochs` None: the model's preset)."""
    p.add_argument("--model", default=model,
                   help=f"model (nerv, hnerv, nervpp, cam, ...; default {model}); "
                        "config fields may follow, e.g. hnerv:cam_nodes=30 for HNeRV with CAM")
    p.add_argument("--size", type=parse_size, help=f"parameter budget, e.g. 0.2M or 150k (at most {MAX_PARAMS:,})")
    p.add_argument("--bpp", type=_float_in(MAX_BPP),
                   help=f"target bits per pixel: λ follows it (--pipeline rd; default {DEFAULT_BPP:g} without --lambda), "
                        "and it sets the size unless --size does (with --pipeline fixed it sets the size)")
    p.add_argument("--epochs", type=_float_in(MAX_EPOCHS), default=epochs,
                   help=f"fitting epochs (default {epochs:g})" if epochs else "fitting epochs (default: the model's preset)")
    # --bits, --embed-bits, --prune and --batch default to None ("not given"), so that a family that does not
    # honour one refuses it when given (train.cli.check_fit_options); train.cli.FIT_DEFAULTS fills them in
    p.add_argument("--bits", type=_bits, help="quantization bits of weights (implies --pipeline fixed; default 8)")
    p.add_argument("--embed-bits", type=_bits, help="quantization bits of per-frame embeddings (HNeRV's latents; "
                                                    "default: --bits)")
    p.add_argument("--prune", type=_fraction, help="global sparsity, e.g. 0.2 (default 0)")
    p.add_argument("--pipeline", choices=("fixed", "rd", "rec"),
                   help="rd: rate-distortion training on learned quantization steps, λ set by --lambda or following "
                        "--bpp (default where the model has it); fixed: fit, then quantization-aware fine-tuning at "
                        "--bits (default where --bits or --embed-bits is given); rec: one posterior sample, relative-"
                        "entropy coded against a learned prior (recombiner's only pipeline)")
    p.add_argument("--prior", metavar="PRIOR",
                   help="the learned prior of --pipeline rec (nerva train-prior); default: the model's prior for the "
                        "nearest rate in $NERVA_PRIORS or shipped with nerva")
    p.add_argument("--lambda", type=_float_in(MAX_LAMBDA), dest="lambda",
                   help="rate-distortion training (implies --pipeline rd): loss = MSE + LAMBDA x estimated bits "
                        "per pixel, on learned quantization steps (e.g. 0.001-1)")
    p.add_argument("--lr", type=_float_in(MAX_LR), help="peak learning rate (default: preset)")
    p.add_argument("--batch", type=_batch, help="frames per step (default 2)")
    p.add_argument("--seed", type=_seed, default=0, help="the run's one random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="also print the summary as one JSON line")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nerva", description="Compress videos as neural networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("fit", help="fit a model to a video and write a .nerva file")
    p.add_argument("input", help="video file (mp4, mkv, y4m, ...) or a folder of PNG frames")
    p.add_argument("-o", "--output", required=True, help="output .nerva file")
    p.add_argument("--frames", type=parse_range, help="frame range A:B of the input")
    p.add_argument("--resize", type=parse_wh, help="resize frames to WxH before fitting")
    add_fit_options(p)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT's checkpoint")
    p.add_argument("--checkpoint-every", type=_int_in(1, 10**9), default=500, help="steps between checkpoints")

    p = sub.add_parser("decode", help="decode a .nerva file to video frames")
    p.add_argument("file", help=".nerva file")
    p.add_argument("--prior", metavar="PRIOR", help="where the file's prior is, if it has one and it is not in "
                                                    "$NERVA_PRIORS or shipped with nerva")
    p.add_argument("-o", "--output", required=True,
                   help="out.mp4 / out.mkv (lossless) / out.y4m / a folder/ of PNG frames (lossless)")
    p.add_argument("--frames", type=parse_range, help="frame range A:B to decode")
    p.add_argument("--lossless", action="store_true", help="lossless mp4 (libx264rgb, qp 0)")
    p.add_argument("--batch", type=_batch, default=DEFAULT_BATCH,
                   help=f"frames per forward pass (default {DEFAULT_BATCH}; another batch size may round a "
                        "rare pixel value differently)")

    p = sub.add_parser("play", help="play a .nerva file in the browser, decoding frames on demand")
    p.add_argument("file", help=".nerva file")
    p.add_argument("--prior", metavar="PRIOR", help="where the file's prior is, if it has one and it is not in "
                                                    "$NERVA_PRIORS or shipped with nerva")
    p.add_argument("--reference", metavar="SOURCE",
                   help="the source video: adds an A/B toggle and the per-frame PSNR")
    p.add_argument("--reference-start", type=_int_in(0, MAX_FRAME_INDEX), default=0, metavar="N",
                   help="the source frame the file's frame 0 was fitted to (default 0)")
    p.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1 (default: any free port)")
    p.add_argument("--no-browser", action="store_true", help="print the URL, do not open a browser")
    p.add_argument("--batch", type=_batch, default=DEFAULT_BATCH,
                   help=f"frames per forward pass (default {DEFAULT_BATCH}; another batch size may round a "
                        "rare pixel value differently)")
    p.add_argument("--prefetch", type=_int_in(0, 1024), default=4, help="batches decoded ahead (default 4)")
    p.add_argument("--cache-mb", type=_float_in(MAX_CACHE_MB), default=256,
                   help="cap on the decoded frames kept, in MiB (default 256; at least one batch; a smaller cap "
                        "shortens the prefetch)")

    p = sub.add_parser("info", help="describe a .nerva file: config, sections, bytes, bpp")
    p.add_argument("file", help=".nerva file")
    p.add_argument("--prior", metavar="PRIOR", help="where the file's prior is, if it has one and it is not in "
                                                    "$NERVA_PRIORS or shipped with nerva")
    p.add_argument("--tensors", action="store_true", help="also list every tensor")

    p = sub.add_parser("demo", help="fit-and-compress the bundled carphone clip, decode and report")
    p.add_argument("-o", "--output-dir", default="nerva-demo", help="where to write the results")
    add_fit_options(p, model=DEMO_MODEL, epochs=DEMO_EPOCHS)

    p = sub.add_parser("rd", help="rate-distortion sweep of INR models and x264/x265/AV1 on one clip")
    p.add_argument("clip", help="a bundled clip name (carphone, bigbuckbunny) or a video path")
    p.add_argument("-o", "--output", required=True, help="results file (JSON lines; finished rows are kept)")
    p.add_argument("--codecs", default="hnerv,nerv,x264,x265,av1",
                   help="comma list of models and baselines (x264, x265, av1 or e.g. x265-medium); "
                        "a model may set config fields, e.g. hnerv:cam_nodes=30; a plain model sweeps the "
                        "fixed-bit pipeline at --bits, MODEL+rd (e.g. nerv+rd) the rate-distortion one")
    p.add_argument("--points", type=_int_in(1, 100), default=4, help="rate points per codec (default 4)")
    p.add_argument("--sizes", type=_sizes,
                   help="comma list of INR parameter budgets, instead of --points spread over --bpp-range")
    p.add_argument("--bpp-range", type=_bpp_range, metavar="LO:HI",
                   help="target bpps the INR points spread over, log-uniformly (default 0.02:0.5)")
    p.add_argument("--frames", type=parse_range, help="frame range A:B of the clip")
    p.add_argument("--resize", type=parse_wh, help="resize frames to WxH first")
    p.add_argument("--prior", metavar="PRIOR", help="the learned prior of a relative-entropy-coded model "
                                                    "(recombiner; default: the one nearest each point's rate)")
    p.add_argument("--epochs", type=_float_in(MAX_EPOCHS), default=60, help="INR fitting epochs (default 60)")
    p.add_argument("--bits", type=_bits, default=6,
                   help="INR quantization bits (default 6: -0.16 dB for 26%% fewer bytes than 8, bench/quant.py)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("train-prior", help="learn the shared prior of a relative-entropy-coded model (recombiner)")
    p.add_argument("clips", nargs="*", help="training videos, cut into FRAMES-frame segments at --size (default: "
                                            "nerva's recipe of bigbuckbunny segments and pans over stills, which "
                                            "never holds a test clip)")
    p.add_argument("-o", "--output", required=True, help="the prior (.npz); its id is the file's stem unless --id")
    p.add_argument("--id", help="the prior's id (a-z, 0-9, -, _, .), which files coded with it name")
    p.add_argument("--model", default="recombiner", help="the model the prior is for (default recombiner)")
    p.add_argument("--bpp", type=_float_in(MAX_BPP), default=DEFAULT_BPP,
                   help=f"the rate the prior is learned for (default {DEFAULT_BPP:g})")
    p.add_argument("--rounds", type=_int_in(1, 100_000), default=40, help="alternations of joint steps and the "
                                                                          "closed-form prior update (default 40)")
    p.add_argument("--steps", type=_int_in(1, 100_000), default=40, help="joint steps per round (default 40)")
    p.add_argument("--beta", type=_float_in(1e6), default=1e-2, help="starting price of a bit per pixel in MSE")
    p.add_argument("--count", type=_int_in(1, 10_000), default=24, help="recipe clips (default 24)")
    p.add_argument("--frames", type=_int_in(1, 66), default=16, help="frames per training clip (default 16)")
    p.add_argument("--size", type=parse_wh, default=(48, 64), help="training clip size WxH (default 64x48)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT's checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _handler(command: str):
    if command in ("decode", "info"):
        from codec import cli as codec_cli
        return getattr(codec_cli, f"cmd_{command}")
    if command == "play":
        from codec import play
        return play.cmd_play
    if command == "rd":
        from eval import rd
        return rd.cmd_rd
    if command == "train-prior":
        from train import rec_cli
        return rec_cli.cmd_train_prior
    from train import cli as train_cli
    return getattr(train_cli, f"cmd_{command}")


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; returns the exit status (0 ok, 1 failed, 2 bad usage, 130 interrupted)."""
    try:
        args = build_parser().parse_args(argv)
        return _handler(args.command)(args) or 0
    except ConfigError as e:
        print(f"nerva: error: {e}", file=sys.stderr)
        return 2
    except NervaError as e:
        print(f"nerva: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nerva: interrupted", file=sys.stderr)
        return 130
    except Exception as e:   # a bug, not bad input: still one line unless asked for the traceback
        if os.environ.get("NERVA_DEBUG"):
            raise
        print(f"nerva: internal error: {type(e).__name__}: {e} (set NERVA_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
