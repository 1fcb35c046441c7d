"""Post-training refinement of rate-distortion files (issue 14, item 4): does rate-distortion-optimized rounding
of the stored symbols (RDOQ: some symbols moved one step towards zero, the cheaper symbol) pay after training?

    python bench/rdoq.py                       # carphone, nerv,hnerv at 0.09 bpp, 30 + 3 epochs
    python bench/rdoq.py --models nervpp --rounds 2

Each model is fitted as `nerva rd` fits its MODEL+rd point (bench/step_search.py's fit_point). On the file's
symbols q (steps as stored, landing factor applied), a move of one symbol to q − sign(q) changes
J = MSE + λ · bpp (λ the fit's final rate weight) by about
    ΔJ ≈ g·δ + ½·h·δ² + λ/pixels · Δbits,
g the gradient of the MSE at the file's weights, h the Gauss–Newton diagonal of the MSE (2/N Σ (∂f/∂w)²,
estimated with one Rademacher probe per batch of frames), δ = −sign(q)·step, Δbits the code length change
under the tensor's LAPLACE model. Moving every symbol whose ΔJ < 0 at once fails: the estimate is right for
one symbol (measured on NeRV 90k: predicted within 10–25 % of the decoded MSE change) but the moves
interact, and moving the best-estimated 0.5 % of NeRV's symbols together cost 1.6 dB. So the moves are
verified: tensor by tensor in path order, the best-estimated FRACTIONS of its symbols (the first that passes)
are moved where the decoded file is no worse in MSE and smaller (both, so before and after compare without
a slope between them); each round recomputes g and h. Rows go to bench/results/rdoq_<clip>.jsonl;
`python bench/table.py rdoq` prints them. Expected runtime on 2 CPU cores: about 12 minutes for the
default models.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from codec import api, rate
from codec.api import QuantPolicy
from codec.decoder import decode_frames
from codec.params import flatten, unflatten
from inr import registry
from step_search import fit_point, refined_row, sweep   # bench/step_search.py (Python puts the script's folder on sys.path)
from table import fit_bench_parser
from train import rd

FRACTIONS = (0.01, 0.002)   # of a tensor's symbols moved at once, the best-estimated first
BATCH = 4                   # frames per gradient / probe batch
COLUMNS = [("codec", "model", "{}"), ("params", "params", "{:,}"), ("psnr_before", "PSNR dB before", "{:.3f}"),
           ("psnr_after", "after", "{:.3f}"), ("bpp_before", "bpp before", "{:.5f}"), ("bpp_after", "after", "{:.5f}"),
           ("moved", "symbols moved", "{:,}"), ("search_s", "search s", "{:.1f}"), ("encode_s", "encode s", "{:.1f}")]


def derivatives(config):
    """f(variables, frames, key) -> ({path: ∂MSE/∂w}, {path: Gauss–Newton diagonal of the MSE}) at `variables`,
    MSE over every frame on [0, 1] (float rendering, as the decoder's before rounding to 8 bits); one
    compiled batch program for every call."""
    spec = registry.spec_of(config)

    @jax.jit
    def batch(v, idx, y, key):
        out, vjp = jax.vjp(lambda v: spec.render(config, v, idx), v)
        (g,) = vjp(2.0 * (out - y))
        (probe,) = vjp(jax.random.rademacher(key, out.shape, jnp.float32))
        return g, jax.tree.map(jnp.square, probe)

    def at(variables, frames: np.ndarray, key) -> tuple[dict, dict]:
        grad = curv = jax.tree.map(jnp.zeros_like, variables)
        for i in range(0, frames.shape[0], BATCH):
            key, sub = jax.random.split(key)
            y = jnp.asarray(frames[i:i + BATCH], jnp.float32) / 255.0
            g, h = batch(variables, jnp.arange(i, i + y.shape[0]), y, sub)
            grad, curv = jax.tree.map(jnp.add, grad, g), jax.tree.map(jnp.add, curv, h)
        n = frames.size
        return ({p: np.asarray(g) / n for p, g in flatten(grad)}, {p: 2.0 * np.asarray(h) / n for p, h in flatten(curv)})
    return at


def search(config, frames: np.ndarray, enc, rounds: int) -> dict:
    """Verified RDOQ of the fitted `enc` (train.encode.Encoded): `rounds` passes over its rate-distortion
    tensors; returns the file and what moved."""
    res, source = enc.fit, frames.astype(np.float32)
    lam_bit = float(res.final_lambda) / config.geometry.pixels
    steps = {p: np.asarray(s, np.float32) * np.float32(res.step_scale) for p, s in res.steps.items()}
    weights = dict(flatten(res.variables))
    grid = {p: np.broadcast_to(s.astype(np.float16).astype(np.float32), np.shape(weights[p])) for p, s in steps.items()}
    symbols = {p: np.rint(np.asarray(weights[p], np.float32) / grid[p]) for p in steps}

    def variables_of(q: dict):
        return unflatten(res.variables, {p: q[p] * grid[p] if p in q else np.asarray(w) for p, w in weights.items()})

    def measured(q: dict) -> tuple[bytes, float]:
        data = rd.file_of(config, variables_of(q), res.aux, steps, QuantPolicy())[1]
        cfg, variables = api.decompress(data)
        return data, float(np.mean((decode_frames(cfg, variables).astype(np.float32) - source) ** 2))

    t, key, moved, derivatives_at = time.perf_counter(), jax.random.key(0), 0, derivatives(config)
    data, mse = measured(symbols)
    if data != enc.data:
        raise AssertionError("the file rebuilt from the fit's symbols differs from the fit's own")
    for _ in range(rounds):
        key, sub = jax.random.split(key)
        grad, curv = derivatives_at(variables_of(symbols), frames, sub)
        for p in sorted(steps):
            q = symbols[p]
            toward = q - np.sign(q)
            delta = (toward - q) * grid[p]
            flat = q.reshape(-1)
            support = (flat.min(), flat.max())
            model = rate.fit_to_support(flat, support)
            d_bits = np.asarray(rate.symbol_bits(toward, model, support)) - np.asarray(rate.symbol_bits(q, model, support))
            d_j = np.where(q != 0, grad[p] * delta + 0.5 * curv[p] * delta ** 2 + lam_bit * d_bits, np.inf)
            gains = int(np.sum(d_j < 0))
            for fraction in FRACTIONS:
                n = min(max(1, int(fraction * q.size)), gains)
                if not n:
                    break
                threshold = np.partition(d_j.reshape(-1), n - 1)[n - 1]
                trial = {**symbols, p: np.where(d_j <= threshold, toward, q)}
                trial_data, trial_mse = measured(trial)
                if trial_mse <= mse and len(trial_data) < len(data):
                    symbols, data, mse = trial, trial_data, trial_mse
                    moved += int(np.sum(trial[p] != q))
                    break
    return {"data": data, "lambda": float(res.final_lambda), "moved": moved, "rounds": rounds,
            "fractions": list(FRACTIONS), "search_s": time.perf_counter() - t}


def run(model: str, frames: np.ndarray, fps: float, bpp: float, epochs: float, rounds: int) -> dict:
    config, enc, encode_s, busy = fit_point(model, frames, fps, bpp, epochs)
    return refined_row(model, bpp, epochs, enc, encode_s, busy, search(config, frames, enc, rounds), frames)


def main(argv=None) -> int:
    ap = fit_bench_parser(__doc__, "nerv,hnerv")
    ap.add_argument("--rounds", type=int, default=3, help="passes over the tensors, derivatives recomputed each")
    args = ap.parse_args(argv)
    return sweep(args, "rdoq", lambda model, video: run(model, video.frames, video.fps, args.bpp, args.epochs,
                                                        args.rounds), COLUMNS)


if __name__ == "__main__":
    sys.exit(main())
