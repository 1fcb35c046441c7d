"""The `nerva` command: argument parsing and dispatch; each subcommand's work lives in its own package.

Handlers are imported lazily so that `nerva decode`, `info` and `play` never import optax or orbax.
"""

from __future__ import annotations

import argparse
import os
import sys

from codec.decoder import DEFAULT_BATCH
from inr.errors import ConfigError, NervaError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line and exit status 2."""

    def error(self, message: str):
        raise ConfigError(message)


def parse_size(text: str) -> int:
    """'0.2M' -> 200000, '150k' -> 150000, '3000' -> 3000 (parameters)."""
    scale = {"k": 1e3, "m": 1e6}.get(text[-1:].lower(), 1)
    try:
        n = int(float(text[:-1] if scale != 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 0.2M or 150k)") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return n


def parse_range(text: str) -> tuple[int, int | None]:
    """'A:B' -> (A, B); 'A:' -> (A, None); ':B' -> (0, B)."""
    a, sep, b = text.partition(":")
    try:
        start, stop = int(a or 0), (int(b) if b else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a frame range: {text!r} (use A:B)") from None
    if not sep or start < 0 or (stop is not None and stop <= start):
        raise argparse.ArgumentTypeError(f"not a frame range: {text!r} (use A:B with 0 <= A < B)")
    return start, stop


def parse_wh(text: str) -> tuple[int, int]:
    """'320x180' -> (H=180, W=320)."""
    w, _, h = text.lower().partition("x")
    try:
        hw = int(h), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a frame size: {text!r} (use WxH, e.g. 320x180)") from None
    if min(hw) < 1:
        raise argparse.ArgumentTypeError(f"frame size must be positive: {text!r}")
    return hw


def _fraction(text: str) -> float:
    v = float(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1): {text}")
    return v


def _int_in(lo: int, hi: int | None = None):
    """An argparse type: an integer in [lo, hi] (hi None: no upper bound)."""
    def parse(text: str) -> int:
        v = int(text)
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must lie in {lo}..{hi}: {text}" if hi is not None
                                             else f"must be >= {lo}: {text}")
        return v
    parse.__name__ = "integer"   # argparse's message for a non-number: "invalid integer value: 'x'"
    return parse


_bits = _int_in(1, 16)
_port = _int_in(0, 65535)


def _positive(kind):
    def parse(text: str):
        v = kind(text)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return v
    return parse


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of parameter counts: {text!r}") from None
    if not sizes or sizes[0] <= 0:
        raise argparse.ArgumentTypeError(f"parameter counts must be positive: {text!r}")
    return sizes


def add_fit_options(p: argparse.ArgumentParser, model: str | None = "hnerv") -> None:
    """Options shared by `fit` and `demo` (model None: the demo preset's model, resolved later)."""
    p.add_argument("--model", default=model,
                   help=f"model (nerv, hnerv, nervpp, cam, ...; default {model or 'the demo preset'}); "
                        "config fields may follow, e.g. hnerv:cam_nodes=30 for HNeRV with CAM")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=parse_size, help="parameter budget, e.g. 0.2M or 150k")
    size.add_argument("--bpp", type=_positive(float), help="target bits per pixel (sets the size)")
    p.add_argument("--epochs", type=_positive(float), help="fitting epochs (default: the model's preset)")
    p.add_argument("--bits", type=_bits, default=8, help="quantization bits of weights (default 8)")
    p.add_argument("--embed-bits", type=_bits, help="quantization bits of latents (default: --bits)")
    p.add_argument("--prune", type=_fraction, default=0.0, help="global sparsity, e.g. 0.2 (default 0)")
    p.add_argument("--lr", type=_positive(float), help="peak learning rate (default: preset)")
    p.add_argument("--batch", type=_positive(int), default=2, help="frames per step (default 2)")
    p.add_argument("--seed", type=int, default=0, help="the run's one random seed (default 0)")
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
    p.add_argument("--checkpoint-every", type=_positive(int), default=500, help="steps between checkpoints")

    p = sub.add_parser("decode", help="decode a .nerva file to video frames")
    p.add_argument("file", help=".nerva file")
    p.add_argument("-o", "--output", required=True,
                   help="out.mp4 / out.mkv (lossless) / out.y4m / a folder/ of PNG frames (lossless)")
    p.add_argument("--frames", type=parse_range, help="frame range A:B to decode")
    p.add_argument("--lossless", action="store_true", help="lossless mp4 (libx264rgb, qp 0)")
    p.add_argument("--batch", type=_positive(int), default=DEFAULT_BATCH,
                   help=f"frames per forward pass (default {DEFAULT_BATCH}; another batch size may round a "
                        "rare pixel value differently)")

    p = sub.add_parser("play", help="play a .nerva file in the browser, decoding frames on demand")
    p.add_argument("file", help=".nerva file")
    p.add_argument("--reference", metavar="SOURCE",
                   help="the source video: adds an A/B toggle and the per-frame PSNR")
    p.add_argument("--reference-start", type=_int_in(0), default=0, metavar="N",
                   help="the source frame the file's frame 0 was fitted to (default 0)")
    p.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1 (default: any free port)")
    p.add_argument("--no-browser", action="store_true", help="print the URL, do not open a browser")
    p.add_argument("--batch", type=_positive(int), default=DEFAULT_BATCH,
                   help=f"frames per forward pass (default {DEFAULT_BATCH}; another batch size may round a "
                        "rare pixel value differently)")
    p.add_argument("--prefetch", type=_int_in(0), default=4, help="batches decoded ahead (default 4)")
    p.add_argument("--cache-mb", type=_positive(float), default=256,
                   help="memory for decoded frames in MiB (default 256)")

    p = sub.add_parser("info", help="describe a .nerva file: config, sections, bytes, bpp")
    p.add_argument("file", help=".nerva file")
    p.add_argument("--tensors", action="store_true", help="also list every tensor")

    p = sub.add_parser("demo", help="fit-and-compress the bundled carphone clip, decode and report")
    p.add_argument("-o", "--output-dir", default="nerva-demo", help="where to write the results")
    add_fit_options(p, model=None)

    p = sub.add_parser("rd", help="rate-distortion sweep of INR models and x264/x265/AV1 on one clip")
    p.add_argument("clip", help="a bundled clip name (carphone, bigbuckbunny) or a video path")
    p.add_argument("-o", "--output", required=True, help="results file (JSON lines; finished rows are kept)")
    p.add_argument("--codecs", default="hnerv,nerv,x264,x265,av1",
                   help="comma list of models and baselines (x264, x265, av1 or e.g. x265-medium); "
                        "a model may set config fields, e.g. hnerv:cam_nodes=30")
    p.add_argument("--points", type=_positive(int), default=4, help="rate points per codec (default 4)")
    p.add_argument("--sizes", type=_sizes,
                   help="comma list of INR parameter budgets, instead of --points spread over 0.02-0.5 bpp")
    p.add_argument("--frames", type=parse_range, help="frame range A:B of the clip")
    p.add_argument("--resize", type=parse_wh, help="resize frames to WxH first")
    p.add_argument("--epochs", type=_positive(float), default=60, help="INR fitting epochs (default 60)")
    p.add_argument("--bits", type=_bits, default=6,
                   help="INR quantization bits (default 6: -0.16 dB for 26%% fewer bytes than 8, bench/quant.py)")
    p.add_argument("--seed", type=int, default=0)
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
