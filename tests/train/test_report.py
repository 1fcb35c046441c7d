"""The fit summary's streaming measurement reports exactly what measuring the whole decoded clip does."""

import numpy as np
import pytest

import inr
from codec import api
from codec.api import QuantPolicy
from codec.container import write_atomic
from codec.decoder import decode_frames, measure_file
from codec.metrics import mean_psnr, psnr
from inr.config import Geometry
from train.loop import fit
from train.report import measure_streaming
from train.schedule import Phase, TrainConfig


@pytest.fixture(scope="module")
def written(synthetic, tmp_path_factory):
    """A nerv file fitted for a few steps to the 8-frame synthetic clip (odd frame count per batch: 7)."""
    frames = synthetic[:7]
    config = inr.get("nerv").config_cls.tiny(Geometry.of(*frames.shape[:3]))
    variables = fit(config, frames, TrainConfig((Phase("fit", 2, 3e-3),), batch=2), QuantPolicy()).variables
    path = tmp_path_factory.mktemp("report") / "x.nerva"
    write_atomic(path, api.compress(config, api.quantize_variables(variables, QuantPolicy())))
    return path, frames


def test_streaming_measurement_equals_measuring_the_whole_decoded_clip_bit_for_bit(written):
    path, frames = written
    whole, streamed = measure_file(path, frames), measure_streaming(path, frames)
    assert streamed.quality == whole.quality   # dataclass equality: every float identical
    assert (streamed.bytes, streamed.bpp, streamed.config) == (whole.bytes, whole.bpp, whole.config)
    assert streamed.bytes == path.stat().st_size and streamed.bpp == 8 * streamed.bytes / (7 * 32 * 48)
    # and the PSNR is the per-frame mean over the file's decoded frames, computed here with other ops
    decoded = decode_frames(*api.load(path))
    assert streamed.quality.psnr == pytest.approx(mean_psnr(psnr(frames, decoded)), abs=1e-4)   # float32 sums


def test_a_source_of_another_shape_is_refused(written):
    path, frames = written
    with pytest.raises(ValueError, match="do not match"):
        measure_streaming(path, frames[:6])
