"""Fuzzing the .nerva reader: mutated valid files of every family (CRC recomputed) parse or raise FormatError.

The mutation engine is tests/codec/fuzzing.py (also driven by bench/fuzz.py for the long run). Every case
must end in a successful parse (whose re-encoding, checked on every fourth random case, parses to the
same config and symbols) or in `codec.bytesio.FormatError` with a one-line message; never another
exception. Each case is also held to `fuzzing.MAX_SECONDS` (CPU) and `fuzzing.MAX_PEAK_BYTES`
(tracemalloc peak), checked per case.
"""

import random
import signal
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzing
import inr

# A case that hangs is stopped by SIGALRM well past the asserted bound, so the suite cannot hang on it.
WATCHDOG_S = 30


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"case still running after {WATCHDOG_S} s")


@pytest.fixture(scope="module")
def seeds():
    """{family: [golden seed, fresh tiny() seed]}, each parsed once so that cases are timed warm."""
    all_seeds = fuzzing.golden_seeds() + fuzzing.fresh_seeds()
    for s in all_seeds:
        assert fuzzing.run_case(s.data).kind == "ok", s.label
    by_family = {}
    for s in all_seeds:
        by_family.setdefault(inr.registry.get_by_id(s.model_id).name, []).append(s)
    assert sorted(by_family) == sorted(inr.names())
    return by_family


def check(label: str, data: bytes, roundtrip: bool = True) -> fuzzing.Outcome:
    """Runs one case under the watchdog and asserts its outcome, time and memory bounds."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(WATCHDOG_S)
    try:
        outcome = fuzzing.run_case(data, check_roundtrip=roundtrip)
    except Hang as e:
        pytest.fail(f"{label}: {e}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert outcome.kind in ("ok", "format_error"), f"{label}: {outcome.kind}: {outcome.detail}"
    if outcome.kind == "format_error":
        assert outcome.detail.strip() and "\n" not in outcome.detail, f"{label}: {outcome.detail!r}"
    assert outcome.seconds < fuzzing.MAX_SECONDS, f"{label}: took {outcome.seconds:.2f} s"
    assert outcome.peak_bytes < fuzzing.MAX_PEAK_BYTES, f"{label}: peak {outcome.peak_bytes >> 20} MiB"
    return outcome


@pytest.mark.parametrize("family", inr.names())
def test_every_mutated_file_of_a_family_parses_or_raises_format_error_within_bounds(seeds, family):
    family_seeds = seeds[family]
    others = [s for f, ss in seeds.items() if f != family for s in ss]
    outcomes = []

    @settings(max_examples=500, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(which=st.integers(0, len(family_seeds) - 1), rng=st.randoms(use_true_random=False))
    def case(which, rng):
        seed = family_seeds[which]
        op, data = fuzzing.mutate(seed, rng, others)
        # The re-encoding check costs ~50x a parse (entropy model fits): every fourth case gets it.
        outcomes.append(check(f"{seed.label}: {op}", data, roundtrip=len(outcomes) % 4 == 0))

    case()
    assert len(outcomes) >= 500
    # The harness reaches past the CRC: no case is refused by the checksum, and the refusals come from
    # many different checks behind it (header, layout, side information, entropy models, stream).
    errors = [o.detail for o in outcomes if o.kind == "format_error"]
    assert not [e for e in errors if "checksum" in e]
    assert len({fuzzing.message_class(e) for e in errors}) >= 10


@pytest.mark.parametrize("family", inr.names())
def test_every_header_field_set_to_absurd_values_parses_or_raises_format_error(seeds, family):
    # Three of each field's absurd values (the same every run) on the fresh file, whose header holds
    # every field; bench/fuzz.py --header-sweep tries all of them on every seed.
    (seed,) = [s for s in seeds[family] if s.label.startswith("fresh/")]
    cases = fuzzing.header_cases(seed, per_field=3)
    assert len(cases) >= 3 * len([f for f in seed.fields if f.section == 0])
    for label, data in cases:
        check(f"{seed.label}: {label}", data)


def test_the_mutations_reach_past_the_crc():
    """A mutated file's CRC is valid, so the checksum test never refuses a case."""
    seed = fuzzing.golden_seeds()[0]
    rng = random.Random(0)
    for _ in range(200):
        _, data = fuzzing.mutate(seed, rng)
        assert zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "little")
