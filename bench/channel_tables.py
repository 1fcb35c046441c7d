"""Entropy tables per channel (issue 14, item 1: "one distribution per tensor instead of per row/column",
+13 % BD-rate in NVRC's ablation): would a LAPLACE table per output or input channel pay at our sizes?

    python bench/channel_tables.py                        # carphone, nerv,hnerv,nervpp,cam at 0.09 bpp, 30 + 3 epochs
    python bench/channel_tables.py --models nerv --bpp 0.2

Each model is fitted as `nerva rd` fits its MODEL+rd point (bench/step_search.py's fit_point), whose file
codes every tensor with one LAPLACE table (and learns a step per output channel where a channel holds 128
weights or more, train.rd.PER_CHANNEL_MIN). On the file's own symbols, every tensor whose output channels
(last axis) or input channels (second to last) hold 128 symbols or more is coded again, on paper, with one
table per channel: each fitted as the encoder fits its tables (codec.rate.fit_to_support on the channel's
support), costing its exact code length (codec.rate.file_bits) plus its header's bytes as the file would
store it (EntropyModel.to_bytes), less the one per-tensor header it replaces. A tensor keeps its one table
where that is cheaper. The rows report the payload both ways as a share of the whole file, and the same
without any header cost (the most a cheaper side-information scheme could save). The weights were trained
against one table per tensor, so a fit against per-channel tables could differ; this measures what the
symbols as trained leave on the table. Rows go to bench/results/channel_tables_<clip>.jsonl;
`python bench/table.py channel-tables` prints them. Expected runtime on 2 CPU cores: about 10 minutes.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from codec import rate
from codec.rate import fit_to_support
from step_search import fit_point, sweep   # bench/step_search.py (Python puts the script's folder on sys.path)
from table import fit_bench_parser, provenance
from train.rd import PER_CHANNEL_MIN   # a channel with fewer symbols keeps the tensor's table, as for steps

COLUMNS = [("codec", "model", "{}"), ("params", "params", "{:,}"), ("bpp", "file bpp", "{:.4f}"),
           ("per_tensor_bits", "payload bits, table per tensor", "{:,.0f}"),
           ("out_saved", "per output channel: file smaller by", "{:.2%}"),
           ("in_saved", "per input channel", "{:.2%}"),
           ("out_saved_free", "output, headers free", "{:.2%}"),
           ("in_saved_free", "input, headers free", "{:.2%}"), ("tensors", "tensors with channels ≥ 128", "{}")]


def _table(symbols: np.ndarray) -> tuple[float, int]:
    """(exact payload bits, header bits) of `symbols` under the LAPLACE table the encoder fits to them."""
    x = np.asarray(symbols, np.int64).reshape(-1)
    params = fit_to_support(x.astype(np.float32), (float(x.min()), float(x.max())))
    model = rate.file_model(x, params)
    return rate.file_bits(x, params), 8 * len(model.to_bytes())


def _per_channel(symbols: np.ndarray, axis: int) -> tuple[float, int]:
    """(payload bits, header bits) with one table per channel along `axis`."""
    channels = np.moveaxis(symbols, axis, 0).reshape(symbols.shape[axis], -1)
    parts = [_table(c) for c in channels]
    return sum(p for p, _ in parts), sum(h for _, h in parts)


def measure(quantized: dict) -> dict:
    """Payload bits of the file's symbols with a table per tensor ("per_tensor_bits") and the bits a table
    per output / input channel saves, summed over tensors: with the extra headers ("out_saved", "in_saved")
    and without ("out_saved_free", "in_saved_free")."""
    found = dict.fromkeys(("per_tensor_bits", "out_saved", "in_saved", "out_saved_free", "in_saved_free"), 0.0)
    tensors = 0
    for q in quantized.values():
        s = np.asarray(q.symbols)
        if s.size == 0 or s.min() == s.max():   # a constant tensor codes nothing
            continue
        bits, header = _table(s)
        found["per_tensor_bits"] += bits
        axes = [(name, axis) for name, axis in (("out", -1), ("in", -2))
                if s.ndim >= 2 and s.size // s.shape[axis] >= PER_CHANNEL_MIN]
        for name, axis in axes:
            payload, headers = _per_channel(s, axis)
            found[f"{name}_saved"] += max(bits + header - payload - headers, 0.0)   # the cheaper of the two
            found[f"{name}_saved_free"] += max(bits - payload, 0.0)
        tensors += bool(axes)
    return {**found, "tensors": tensors}


def run(model: str, video, bpp: float, epochs: float) -> dict:
    config, enc, encode_s, busy = fit_point(model, video.frames, video.fps, bpp, epochs)
    t = time.perf_counter()
    found = measure(enc.quantized)
    file_bits = 8 * len(enc.data)
    shares = {k: v / file_bits for k, v in found.items() if "_saved" in k}   # of the whole file
    return {"codec": model, "target_bpp": bpp, "epochs": epochs, "bpp": file_bits / config.geometry.pixels,
            "params": sum(q.symbols.size for q in enc.quantized.values()), "file_bits": file_bits,
            **found, **shares, "min_channel": PER_CHANNEL_MIN, "encode_s": encode_s,
            "measure_s": time.perf_counter() - t, **provenance(busy)}


def main(argv=None) -> int:
    args = fit_bench_parser(__doc__, "nerv,hnerv,nervpp,cam").parse_args(argv)
    return sweep(args, "channel_tables", lambda model, video: run(model, video, args.bpp, args.epochs), COLUMNS,
                 said=lambda r: f"a table per output channel saves {r['out_saved']:.2%} of the file, per input "
                                f"channel {r['in_saved']:.2%}")


if __name__ == "__main__":
    sys.exit(main())
