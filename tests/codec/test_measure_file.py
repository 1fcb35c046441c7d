"""measure_file decodes a written file batch by batch and reports what measuring the whole decoded clip does."""

import jax
import pytest

import inr
from codec import api
from codec.api import QuantPolicy
from codec.container import write_atomic
from codec.decoder import decode_frames, measure_file
from codec.metrics import mean_psnr, measure, psnr
from inr.config import Geometry


@pytest.fixture(scope="module")
def written(synthetic, tmp_path_factory):
    """A nerv file (initial weights, 8 bits) for the 8-frame synthetic clip cut to 7 frames (a short last batch)."""
    frames = synthetic[:7]
    spec = inr.get("nerv")
    config = spec.config_cls.tiny(Geometry.of(*frames.shape[:3]))
    variables = jax.jit(spec.init, static_argnums=0)(config, jax.random.key(0))
    path = tmp_path_factory.mktemp("report") / "x.nerva"
    write_atomic(path, api.compress(config, api.quantize_variables(variables, QuantPolicy())))
    return path, frames


def test_batchwise_measurement_equals_measuring_the_whole_decoded_clip_bit_for_bit(written):
    path, frames = written
    report = measure_file(path, frames)
    decoded = decode_frames(*api.load(path))
    assert report.quality == measure(frames, decoded)   # dataclass equality: every float identical
    assert report.bytes == path.stat().st_size and report.bpp == 8 * report.bytes / (7 * 32 * 48)
    # and the PSNR is the per-frame mean over the decoded frames, computed here with other ops
    assert report.quality.psnr == pytest.approx(mean_psnr(psnr(frames, decoded)), abs=1e-4)   # float32 sums


def test_a_source_of_another_shape_is_refused(written):
    path, frames = written
    with pytest.raises(ValueError, match="do not match"):
        measure_file(path, frames[:6])
