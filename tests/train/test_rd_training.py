"""Rate–distortion training: learned steps start on the 8-bit grid, the file uses them, and the estimate is the file's size."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inr
from codec import api, entropy, rate
from codec.api import QuantPolicy
from inr.config import Geometry
from inr.video import synthetic_clip
from train import rd
from train.encode import encode
from train.schedule import Phase, TrainConfig


def test_initial_steps_span_a_range_including_zero_on_the_6_bit_grid_per_channel_only_for_large_channels():
    assert rd.INIT_BITS == 6 and rd.PER_CHANNEL_MIN == 128   # 2^6 - 1 = 63 steps span a range
    large = np.zeros((128, 3), np.float32)          # 3 output channels of 128 weights: a step each
    large[:2, 0] = [-1.0, 2.0]                      # range [-1, 2]: step 3/63
    large[:2, 1] = [0.25, 0.5]                      # range [0, 0.5] (zero included): step 0.5/63
    small = np.zeros((127, 3), np.float32)          # channels of 127 weights: one step for the tensor
    small[0, :] = [-1.0, 0.5, 0.0]                  # range [-1, 0.5]
    bias = np.array([-0.3, 0.1], np.float32)        # a 1-D tensor: one step, range [-0.3, 0.1]
    steps = rd.initial_steps({"params": {"large": large, "small": small, "b": bias}})
    np.testing.assert_allclose(np.exp(steps["params/large"]), [3 / 63, 0.5 / 63, rd.MIN_STEP], rtol=1e-6)
    np.testing.assert_allclose(np.exp(steps["params/small"]), [1.5 / 63], rtol=1e-6)
    np.testing.assert_allclose(np.exp(steps["params/b"]), [0.4 / 63], rtol=1e-6)


def test_rounding_mode_puts_weights_exactly_on_the_float16_steps_the_file_stores():
    w = jax.random.normal(jax.random.key(0), (4, 5))
    log_steps = {"params/w": jnp.log(jnp.linspace(0.01, 0.3, 5))}
    on_grid, symbols = rd.quantized({"params": {"w": w}}, log_steps, True, jax.random.key(1), 1.0, rd.ANNEAL)
    s16 = np.linspace(0.01, 0.3, 5).astype(np.float32).astype(np.float16).astype(np.float32)
    want = np.rint(np.asarray(w) / s16)
    np.testing.assert_array_equal(np.asarray(symbols.as_dict()["params/w"]), want)
    np.testing.assert_array_equal(np.asarray(on_grid["params"]["w"]), (want * s16).astype(np.float32))


def test_noise_mode_stays_within_one_step_of_the_weights_and_differs_from_rounding():
    w = jax.random.normal(jax.random.key(0), (64, 8))
    log_steps = {"params/w": jnp.full((8,), jnp.log(0.1))}
    noisy, _ = rd.quantized({"params": {"w": w}}, log_steps, False, jax.random.key(1), 0.0, rd.ANNEAL)
    rounded, _ = rd.quantized({"params": {"w": w}}, log_steps, True, jax.random.key(1), 0.0, rd.ANNEAL)
    step = float(np.float16(0.1))
    assert np.abs(np.asarray(noisy["params"]["w"]) - np.asarray(w)).max() <= step
    assert not np.array_equal(np.asarray(noisy["params"]["w"]), np.asarray(rounded["params"]["w"]))


@pytest.mark.parametrize("scale, zeros", [(2.0, 0.0), (8.0, 0.5), (30.0, 0.2)])
def test_the_estimate_of_integer_symbols_is_the_files_laplace_table_within_half_a_percent(scale, zeros):
    rng = np.random.default_rng(0)
    k = np.rint(rng.laplace(0, scale, 4000)).astype(np.int32)
    k[rng.random(k.size) < zeros] = 0
    got = float(rd.bits({"t": jnp.asarray(k, jnp.float32)}))
    n_theta, n_p0 = rate.to_file(rate.fit(k))
    table = entropy.EntropyModel(entropy.LAPLACE, int(k.min()), int(k.max()), (n_theta, n_p0))
    want = entropy.ideal_bits(k, table)   # the integer table of FORMAT.md §7.2
    assert got == pytest.approx(want, rel=5e-3)


def _rd_fit(name: str):
    spec = inr.get(name)
    config = spec.config_cls.tiny()
    g = config.geometry
    frames = synthetic_clip(g.frames, g.height, g.width)
    phases = (Phase("fit", 2, 3e-3, warmup=0.1, use_encoder=True),
              Phase("rd", 2, 1e-3, rd="noise", rate_weight=0.05), Phase("ste", 1, 3e-4, rd="ste", rate_weight=0.05))
    return config, encode(config, frames, TrainConfig(phases, batch=2, seed=3), QuantPolicy())


@pytest.mark.parametrize("name", [n for n in inr.names() if "bits" in inr.get(n).fit_options])
def test_a_rate_distortion_fit_writes_its_learned_steps_and_the_estimate_is_the_files_payload(name):
    config, enc = _rd_fit(name)
    assert set(enc.fit.steps) == set(enc.quantized)
    for p, q in enc.quantized.items():   # the file's steps are the learned ones, as float16
        np.testing.assert_array_equal(q.steps, np.asarray(enc.fit.steps[p]).astype(np.float16))
    _, collections, _ = api.parse(enc.data)
    payload = sum(info.ideal_bits for _, infos in collections.values() for info in infos)
    estimate = float(rd.bits({p: jnp.asarray(q.symbols, jnp.float32) for p, q in enc.quantized.items()}))
    assert estimate == pytest.approx(payload, rel=0.02)


def test_lambda_holds_through_a_noisy_phase_and_follows_the_files_symbols_straight_through():
    # A noisy phase keeps the λ the controller starts with; the straight-through phase moves it by the bits
    # of its own symbols, the file's. With a learning rate too small to move a weight across a rounding
    # boundary the last step's measured bits are those of the fitted weights' file symbols (before
    # encode's landing on the target).
    from train.loop import fit as fit_model
    config = inr.get("nerv").config_cls.tiny()
    g = config.geometry
    frames = synthetic_clip(g.frames, g.height, g.width)
    pixels = g.frames * g.height * g.width
    phases = (Phase("fit", 2, 3e-3, warmup=0.1), Phase("rd", 1, 1e-9, rd="noise", target_bpp=0.5),
              Phase("ste", 1, 1e-9, rd="ste", target_bpp=0.5))
    result = fit_model(config, frames, TrainConfig(phases, batch=2, seed=3), QuantPolicy(), log_every=1)
    rows = {name: [r for r in result.history if r["phase"] == name and "bpp_estimate" in r] for name in ("rd", "ste")}
    noisy_lambdas = {r["lambda_mean"] for r in rows["rd"]}
    assert len(rows["rd"]) >= 2 and len(noisy_lambdas) == 1   # every noisy step, one λ
    # a tiny model holds far more than 0.5 bpp of payload, so the first straight-through steps raise λ
    assert rows["ste"][0]["lambda_mean"] == pytest.approx(noisy_lambdas.pop(), rel=1e-6)   # its step's own λ
    ends = {r["phase"]: r["lambda"] for r in result.history if "phase_end_psnr" in r and r["phase"] != "fit"}
    assert ends["rd"] == pytest.approx(rows["rd"][0]["lambda_mean"], rel=1e-6) and ends["ste"] > ends["rd"] * 1.01
    quantized, _ = rd.file_of(config, result.variables, result.aux, result.steps, QuantPolicy())
    estimate = float(rd.bits({p: jnp.asarray(q.symbols, jnp.float32) for p, q in quantized.items()}))
    assert rows["ste"][-1]["bpp_estimate"] * pixels == pytest.approx(estimate, rel=1e-4)


def test_a_rate_distortion_fit_rerun_with_its_seed_writes_the_same_bytes_and_the_noise_follows_the_seed():
    config = inr.get("nerv").config_cls.tiny()
    g = config.geometry
    frames = synthetic_clip(g.frames, g.height, g.width)
    phases = (Phase("fit", 1, 3e-3, warmup=0.1), Phase("rd", 2, 1e-3, rd="noise", target_bpp=2.0),
              Phase("ste", 1, 3e-4, rd="ste", target_bpp=2.0))
    a, b = (encode(config, frames, TrainConfig(phases, batch=2, seed=3), QuantPolicy()).data for _ in range(2))
    assert a == b
    renamed = (phases[0], dataclasses.replace(phases[1], name="rd2"), phases[2])   # another noise stream
    assert encode(config, frames, TrainConfig(renamed, batch=2, seed=3), QuantPolicy()).data != a
    # the run's seed moves the noise stream too (a new seed also changes the init, so the stream's seed
    # is compared directly)
    from train import loop
    seeds = {int(loop._numbers(phases[1], 10, 4, 2, 32 * 48, seed)["noise_seed"]) for seed in (3, 4)}
    assert len(seeds) == 2


def _clip(tmp_path):
    from inr.video import write_video
    path = tmp_path / "clip.mp4"
    write_video(path, synthetic_clip(4, 32, 48), fps=25)
    return path


@pytest.mark.parametrize("extra, words", [
    (["--lambda", "0.1", "--bits", "6"], "--bits does not apply to --pipeline rd"),
    (["--pipeline", "rd", "--bpp", "0.1", "--embed-bits", "6", "--model", "hnerv"],
     "--embed-bits does not apply to --pipeline rd"),
    (["--lambda", "0.1", "--bpp", "0.1"], "--bpp with --lambda"),
    (["--lambda", "0.1", "--pipeline", "fixed"], "--lambda does not apply to --pipeline fixed"),
    (["--bits", "8", "--bpp", "0.1", "--size", "6k"], "--size with --bpp"),
    (["--pipeline", "fixed", "--bpp", "0.1", "--size", "6k"], "--size with --bpp"),
    (["--lambda", "0.1", "--model", "nirvana"], "--lambda does not apply to nirvana"),
    (["--pipeline", "rd", "--bpp", "0.1", "--model", "nirvana"], "--pipeline does not apply to nirvana")])
def test_a_rate_distortion_option_it_makes_meaningless_is_refused_before_any_work(extra, words, tmp_path, capsys):
    from eval.cli import main
    clip = _clip(tmp_path)
    argv = ["fit", str(clip), "-o", str(tmp_path / "x.nerva"), *extra, "--quiet"]
    if "--bpp" not in extra:
        argv += ["--size", "6k"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_a_larger_lambda_writes_a_smaller_payload_whose_tensors_use_laplace_tables(tmp_path, capsys):
    from eval.cli import main
    clip, payload = _clip(tmp_path), {}
    for lam in ("0.001", "1"):
        out = tmp_path / f"x{lam}.nerva"
        assert main(["fit", str(clip), "-o", str(out), "--model", "nerv", "--size", "6k", "--epochs", "200",
                     "--lambda", lam, "--seed", "2", "--quiet"]) == 0
        _, collections, _ = api.parse(out.read_bytes())
        infos = [info for _, tensor_infos in collections.values() for info in tensor_infos]
        # a constant tensor codes nothing, with a one-symbol table; every other one uses its LAPLACE table
        assert {info.model.kind for info in infos if info.model.size > 1} == {entropy.LAPLACE}
        payload[lam] = sum(info.ideal_bits for info in infos)   # the steps' side bytes do not depend on λ
    assert payload["1"] < 0.8 * payload["0.001"]


def test_the_controller_moves_log_lambda_by_its_gain_times_the_clipped_log_ratio_of_estimate_to_target():
    assert rd.CONTROL_GAIN == 0.06 and rd.CONTROL_MAX_MOVE == 1.0 and rd.CONTROL_TRAVEL == 24.0
    assert rd.CONTROL_AIM == 1.03
    control = {"log_lambda": jnp.float32(np.log(0.1)), "side_bits": jnp.float32(1000.0)}
    # the target's bits aimed 3 % above: 1.03 · 10,679.6 = 11,000, i.e. 10,000 of payload beside 1,000 side bits
    target = jnp.float32(11000.0 / 1.03)

    def moved(estimate):
        return float(rd.controlled(control, jnp.float32(estimate), target, 2000)["log_lambda"]) - np.log(0.1)
    assert moved(20000.0) == pytest.approx(0.06 * np.log(2.0), abs=1e-6)    # twice the payload: λ grows
    assert moved(5000.0) == pytest.approx(-0.06 * np.log(2.0), abs=1e-6)    # half: λ shrinks as much
    assert moved(10000.0) == pytest.approx(0.0, abs=1e-6)                   # on the aim: unchanged
    assert moved(10000.0 * np.e ** 3) == pytest.approx(0.06, abs=1e-6)      # log ratio 3 clipped to 1
    top = {**control, "log_lambda": jnp.float32(np.log(rd.LAMBDA_RANGE[1]))}
    assert float(rd.controlled(top, jnp.float32(1e9), target, 2000)["log_lambda"]) == pytest.approx(
        np.log(rd.LAMBDA_RANGE[1]), rel=1e-6)
    assert float(rd.controlled(control, jnp.float32(1e9), target, 2000)["side_bits"]) == 1000.0
    short = rd.controlled(control, jnp.float32(20000.0), target, 300)   # 300 steps: gain 24 / 300
    assert float(short["log_lambda"]) - np.log(0.1) == pytest.approx(0.08 * np.log(2.0), abs=1e-6)


def test_the_controller_starts_at_mse_over_bpp_with_the_side_bits_a_file_of_the_state_spends_beyond_its_payload():
    spec = inr.get("nerv")
    config = spec.config_cls.tiny()
    variables = spec.init(config, jax.random.key(0))
    log_steps = rd.initial_steps(variables)
    control = rd.start_control(config, variables, None, log_steps, QuantPolicy(), 0.01, Phase(
        "rd", 1, 1e-3, rd="noise", target_bpp=0.5))
    assert rd.CONTROL_START == 0.05
    assert float(jnp.exp(control["log_lambda"])) == pytest.approx(0.05 * 0.01 / 0.5, rel=1e-5)
    _, data = rd.file_of(config, variables, None, rd.steps_of(log_steps), QuantPolicy())
    _, collections, _ = api.parse(data)
    payload = sum(info.ideal_bits for _, infos in collections.values() for info in infos)
    side = 8 * len(data) - payload   # header, tables, steps and the coder's flush, from the parsed file
    assert 0 < side < 8 * len(data)
    assert float(control["side_bits"]) == pytest.approx(side, abs=0.006 * payload)
    given = rd.start_control(config, variables, None, log_steps, QuantPolicy(), 0.01, Phase(
        "rd", 1, 1e-3, rd="noise", target_bpp=0.5, rate_weight=0.3))
    assert float(jnp.exp(given["log_lambda"])) == pytest.approx(0.3, rel=1e-5)


def test_a_bpp_target_makes_a_rate_distortion_schedule_of_the_same_epochs_as_fit_plus_qat():
    from train.schedule import RD_SHARES, standard
    fixed = standard(30, lr=2e-3)
    target = standard(30, lr=2e-3, target_bpp=0.1)
    assert [p.name for p in fixed.phases] == ["fit", "qat"] and fixed.total_epochs == 33
    assert [p.name for p in target.phases] == ["fit", "rd", "ste"]
    assert [p.epochs for p in target.phases] == pytest.approx([33 * s for s in RD_SHARES])
    assert [p.target_bpp for p in target.phases] == [0.0, 0.1, 0.1] and target.total_epochs == pytest.approx(33)
    with pytest.raises(ValueError, match="needs a rate-distortion phase"):
        Phase("fit", 1, 1e-3, target_bpp=0.1)


def test_a_family_preset_sets_the_float_fits_share_of_a_rate_distortion_schedule():
    from train import presets
    from train.schedule import standard

    def tiny(model):
        return inr.registry.get(model).config_cls.tiny(Geometry(4, 32, 48))
    # HNeRV's preset: at 0.043 bpp and below half the 33 epochs to the float fit (whose encoder makes the
    # stored embeddings), a sixth of the rest to the noisy phase and five sixths straight through (its
    # rd_noise_share; other families a third, RD_SHARES' 0.3 : 0.6); 0.7 at 0.2 bpp and above, and halfway
    # between (0.6) at their geometric mean; a fit at a fixed λ takes the lowest rate's share
    def epochs(model="hnerv", **target):
        return [(p.name, p.epochs) for p in presets.train_config(model, 30, config=tiny(model), **target).phases]
    for bpp in (0.01, 0.043):
        assert epochs(target_bpp=bpp) == [("fit", pytest.approx(16.5)), ("rd", pytest.approx(16.5 / 6)),
                                          ("ste", pytest.approx(16.5 * 5 / 6))]
    assert epochs(rate_weight=0.01) == epochs(target_bpp=0.043)
    for bpp in (0.2, 0.5):
        assert epochs(target_bpp=bpp) == [("fit", pytest.approx(23.1)), ("rd", pytest.approx(1.65)),
                                          ("ste", pytest.approx(8.25))]
    assert epochs("nerv", target_bpp=0.1) == [("fit", pytest.approx(3.3)), ("rd", pytest.approx(9.9)),
                                              ("ste", pytest.approx(19.8))]
    assert epochs(target_bpp=(0.043 * 0.2) ** 0.5)[0] == ("fit", pytest.approx(19.8))
    hnerv = presets.train_config("hnerv", 30, config=tiny("hnerv"), target_bpp=0.1)
    assert hnerv.phases[0].use_encoder and not hnerv.phases[1].use_encoder
    nerv = presets.train_config("nerv", 30, config=tiny("nerv"), target_bpp=0.1)
    assert nerv.phases[0].epochs == pytest.approx(3.3)
    assert presets.train_config("hnerv", 30, config=tiny("hnerv")).phases[0].epochs == 30
    for bad in (0.0, 1.0, 1.2):
        with pytest.raises(ValueError, match="rd_fit_share must be in"):
            standard(30, target_bpp=0.1, rd_fit_share=bad)
        with pytest.raises(ValueError, match="rd_noise_share must be in"):
            standard(30, target_bpp=0.1, rd_noise_share=bad)


def test_a_bpp_target_under_the_rd_pipeline_lands_within_5_percent_on_the_written_file(tmp_path, capsys):
    import json

    from eval.cli import main
    clip, pixels = _clip(tmp_path), 4 * 32 * 48
    for target in (3.0, 5.0):   # 6,144 and 10,240 parameters at train.rd.CONTROL_BITS_PER_PARAM = 3
        out = tmp_path / f"x{target}.nerva"
        assert main(["fit", str(clip), "-o", str(out), "--model", "nerv", "--pipeline", "rd", "--bpp", str(target),
                     "--epochs", "20", "--seed", "2", "--quiet", "--json"]) == 0
        row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert 8 * out.stat().st_size / pixels == pytest.approx(target, rel=0.05)   # from the file's length
        assert row["lambda"] > 0 and row["params"] <= target * pixels / 3   # sized for 3 bits per parameter


def test_nirvanas_rate_is_the_one_rate_model_and_each_groups_estimate_is_its_sections_payload():
    """NIRVANA prices its residuals with train.rd.bits (ModelSpec.rate_symbols), and its file codes every
    tensor with the LAPLACE model that estimate describes: each group's estimate, from the file's own
    symbols (group k: its residual to group k-1), is its section's payload within 2 %, and the last
    group's training-time estimate at the end of its fit is its payload too."""
    from train import presets
    spec = inr.get("nirvana")
    config = spec.config_cls.tiny(Geometry.of(8, 32, 48))   # two groups of 4 frames
    frames = synthetic_clip(8, 32, 48)
    enc = encode(config, frames, presets.train_config("nirvana", 40, config=config), QuantPolicy())
    _, collections, _ = api.parse(enc.data)
    references = spec.references(config)
    assert set(collections) == {"group000", "group001"} and references == {"group001": "group000"}
    payloads = {}
    for name, (got, infos) in collections.items():
        assert {info.model.kind for info in infos} <= {entropy.LAPLACE, entropy.UNIFORM}   # UNIFORM: constant
        ref = collections[references[name]][0] if name in references else None
        residuals = {p: jnp.asarray(q.symbols - (ref[p].symbols if ref else 0), jnp.float32) for p, q in got.items()}
        payloads[name] = sum(info.ideal_bits for info in infos)
        assert payloads[name] > 1000
        assert float(rd.bits(residuals)) == pytest.approx(payloads[name], rel=0.02)
    last = float(rd.bits(spec.rate_symbols(config, enc.fit.variables, enc.fit.aux, jnp.arange(4))))
    assert last == pytest.approx(payloads["group001"], rel=0.02)


@pytest.mark.parametrize("miss", [-0.10, 0.10])
def test_a_file_that_misses_its_target_lands_four_percent_off_on_its_side_and_one_within_5_percent_is_kept(miss):
    from train import encode as enc
    from train.loop import FitResult
    spec = inr.get("nerv")
    config = spec.config_cls.tiny()
    variables = spec.init(config, jax.random.key(3))
    steps = rd.steps_of(rd.initial_steps(variables))
    result = FitResult(variables, [], 0.0, 0.0, None, None, steps)
    policy = QuantPolicy()
    first = rd.file_of(config, variables, None, steps, policy)
    size = 8 * len(first[1])
    # within the 5 % --bpp promises: the fit's own file, steps untouched
    for near in (0.96, 1.04):
        kept = enc._landed(config, result, policy, size * near, first)
        assert kept[1] == first[1] and kept[2] == 1.0
    target = size / (1.0 + miss)   # the file is 10 % over (under) the target
    _, data, factor = enc._landed(config, result, policy, target, first)
    landed = 8 * len(data) / target - 1.0
    assert (factor > 1.0) == (miss > 0)   # coarser steps for a file too large, finer for one too small
    assert landed == pytest.approx(0.04 if miss > 0 else -0.04, abs=0.004)


def test_a_landing_whose_file_size_jumps_past_its_aim_keeps_a_file_within_the_tolerance(monkeypatch):
    # a file 6 % under its target whose size jumps to 2 % over as soon as the steps get finer (weights on the
    # rounding thresholds): 2 % over is 6.25 % from the 4 %-under aim, farther than the file itself (2.1 %),
    # yet it is the one within the promised 5 %
    from train import encode as enc
    from train.loop import FitResult
    target = 80_000.0
    first = (None, bytes(int(0.94 * target / 8)))
    monkeypatch.setattr(enc.rd, "file_of", lambda config, variables, aux, steps, policy: (
        None, bytes(int(1.02 * target / 8)) if float(steps["w"]) < 1.0 else first[1]))
    result = FitResult({}, [], 0.0, 0.0, None, None, {"w": np.float32(1.0)})
    _, data, factor = enc._landed(None, result, QuantPolicy(), target, first)
    assert factor < 1.0 and 8 * len(data) == pytest.approx(1.02 * target, abs=8)


@pytest.mark.parametrize("options, pipeline, bpp, lam", [
    ([], "rd", 0.1, 0.0),                                   # the default: rate-distortion at 0.1 bpp
    (["--bpp", "0.05"], "rd", 0.05, 0.0),
    (["--lambda", "0.01"], "rd", None, 0.01),               # a fixed λ has no bpp target
    (["--bits", "6"], "fixed", None, 0.0),                  # fixed bit depths ask for the fixed pipeline
    (["--model", "hnerv", "--embed-bits", "4"], "fixed", None, 0.0),
    (["--bits", "6", "--bpp", "0.05"], "fixed", 0.05, 0.0),
    (["--pipeline", "fixed"], "fixed", None, 0.0),
    (["--model", "nirvana"], "fixed", None, 0.0)])          # a family without it keeps its own pipeline
def test_nerva_fit_runs_the_rate_distortion_pipeline_unless_fixed_bits_are_asked_for(options, pipeline, bpp, lam):
    import eval.cli
    import train.cli
    args = eval.cli.build_parser().parse_args(["fit", "x.mp4", "-o", "x.nerva", *options])
    train.cli.check_fit_options(args)
    assert (args.pipeline, args.bpp, getattr(args, "lambda")) == (pipeline, bpp, lam)
    assert args.bits == (6 if "--bits" in options else 8)


@pytest.mark.parametrize("model", ["nerv", "hnerv"])
def test_under_the_rate_distortion_pipeline_size_fixes_the_parameter_count_and_the_target_stays(model):
    # --size 40k with the default target: the model has at most 40,000 parameters (for_size never goes over
    # the budget; it rounds down to a buildable width) and at least 80 % of them, the fit aims at 0.1 bpp, and HNeRV's embedding channels follow
    # that rate (0.065 · 0.1 · 176·144 / 12 cells = 13.7 -> 14, inr/hnerv.py's RD_EMBED_SHARE rule)
    import eval.cli
    import train.cli
    g = Geometry.of(120, 144, 176)
    args = eval.cli.build_parser().parse_args(["fit", "x.mp4", "-o", "x.nerva", "--model", model, "--size", "40k"])
    train.cli.check_fit_options(args)
    config = train.cli.make_fit_config(args, g)
    n = inr.sizing.count(inr.registry.get(model).init, config)
    assert 32_000 <= n <= 40_000
    assert train.cli._train_config(args, model, config).phases[-1].target_bpp == 0.1
    if model == "hnerv":
        assert config.embed_channels == 14
