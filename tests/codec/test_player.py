"""codec.player: random access equals sequential decoding, prefetch, the bounded cache, seeks cancelling
stale requests; codec.play's HTTP side: the token, the routes, raw RGBA frames and the PSNR header."""

import json
import threading
import time
import urllib.error
import urllib.request

import jax
import numpy as np
import pytest

import inr
from codec import api, decoder, play, player
from codec.metrics import psnr
from codec.player import Cancelled, Player
from inr import Geometry


@pytest.fixture(scope="module")
def clip():
    """(config, variables, all frames, .nerva bytes) of a tiny NeRV whose 20 frames all differ."""
    config = inr.get("nerv").config_cls.tiny(Geometry.of(20, 32, 48, 25.0))
    variables = inr.spec_of(config).init(config, jax.random.key(3))
    quantized = api.quantize_variables(variables, api.QuantPolicy(bits=8))
    data = api.compress(config, quantized)
    config, variables = api.decompress(data)
    frames = decoder.decode_frames(config, variables)
    assert len({f.tobytes() for f in frames}) == 20
    return config, variables, frames, data


def wait_until(condition, seconds=30.0):
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_random_access_iteration_and_ranges_equal_decoding_every_frame_in_order(clip):
    config, variables, frames, data = clip
    with Player(data, batch=3, prefetch=2) as p:
        assert (len(p), p.height, p.width, p.fps) == (20, 32, 48, 25.0)
        for i in [17, 3, 19, 0, 9, 9, 10, 2]:
            np.testing.assert_array_equal(p.frame(i), frames[i])
        np.testing.assert_array_equal(p.frames(5, 14), frames[5:14])
        np.testing.assert_array_equal(np.stack(list(p)), frames)
        np.testing.assert_array_equal(p.decode(13), frames[12:15])   # the aligned batch holding frame 13
        assert p.frames(4, 4).shape == (0, 32, 48, 3)


def test_frames_are_read_only_and_bad_indices_are_refused(clip):
    with Player(clip[:2]) as p:
        with pytest.raises(ValueError):
            p.frame(0)[0, 0, 0] = 1
        with pytest.raises(IndexError, match="outside the file's 20 frames"):
            p.frame(20)
        with pytest.raises(IndexError):
            p.frame(-1)
        with pytest.raises(TypeError):
            p.frame(1.0)
        with pytest.raises(IndexError):
            p.frames(3, 21)
    with pytest.raises(RuntimeError, match="closed"):
        p.frame(0)


def test_prefetch_decodes_ahead_of_the_playhead_and_the_cache_stays_bounded(clip):
    config, variables, frames, _ = clip
    batch_bytes = 2 * 32 * 48 * 3
    with Player((config, variables), batch=2, prefetch=3, cache_mb=5 * batch_bytes / 2**20) as p:
        assert p.cache_batches == 5
        _, info = p.frame_with_info(0)
        assert not info.cached and info.decode_ms > 0
        wait_until(lambda: p.stats["decoded_batches"] == 4)   # batch 0 and the 3 ahead of it
        time.sleep(0.2)
        assert sorted(p._cache) == [0, 1, 2, 3]                # and nothing more
        for i in range(1, 8):
            _, info = p.frame_with_info(i)
            assert info.cached, i                              # playing: every frame was ready
        for i in range(20):
            p.frame(i)
            assert len(p._cache) <= 5
        assert p.stats["decoded_batches"] == 10                # each batch once


def test_a_seek_cancels_requests_still_waiting_and_stale_prefetch_is_never_started(clip, monkeypatch):
    config, variables, frames, _ = clip
    started, release = [], threading.Semaphore(0)

    def gated(config, variables, b, batch):   # a decode that runs only when the test says so
        started.append(b)
        release.acquire()
        return decoder.decode_batch(config, variables, b, batch)

    monkeypatch.setattr(player, "decode_batch", gated)
    results = {}

    def ask(i):
        try:
            results[i] = p.frame(i)
        except Cancelled as e:
            results[i] = e

    p = Player((config, variables), batch=2, prefetch=2)
    try:
        first = threading.Thread(target=ask, args=(0,))
        first.start()
        wait_until(lambda: started == [0])                     # batch 0 in flight
        stale = threading.Thread(target=ask, args=(12,))       # a seek to batch 6 ...
        stale.start()
        wait_until(lambda: p._head == 6)
        latest = threading.Thread(target=ask, args=(2,))       # ... superseded by a seek back to batch 1
        latest.start()
        stale.join(10)
        assert isinstance(results[12], Cancelled)
        for _ in range(2):
            release.release()
        first.join(10)
        latest.join(10)
        np.testing.assert_array_equal(results[0], frames[0])
        np.testing.assert_array_equal(results[2], frames[2])
        assert started[:2] == [0, 1] and 6 not in started      # the stale batch 6 is never decoded
        assert p.stats["cancelled"] == 1
    finally:
        for _ in range(20):
            release.release()
        p.close()


@pytest.fixture(scope="module")
def server(clip):
    config, variables, frames, data = clip
    reference = np.clip(frames.astype(np.int16) + np.arange(20)[:, None, None, None] % 3, 0, 255).astype(np.uint8)
    with play.PlayServer(Player(data), reference=reference, file_bytes=len(data)).start() as s:
        yield s, reference


def get(url):
    """(status, headers, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_requests_without_the_token_are_refused(server):
    s, _ = server
    base = f"http://127.0.0.1:{s.port}"
    assert s.url.startswith(base + "/") and len(s.token) >= 32
    wrong = s.token[:-1] + ("y" if s.token.endswith("x") else "x")   # one character off
    for path in ["/", "/frame/0", "/info", "/index.html", f"/{wrong}/frame/0", f"/frame/0?token={s.token}"]:
        assert get(base + path)[0] == 403, path
    assert get(base + f"/{s.token}/frame/0")[0] == 200
    assert s._httpd.server_address[0] == "127.0.0.1"


def test_the_page_its_info_and_raw_rgba_frames_with_decode_time_and_psnr(server, clip):
    s, reference = server
    frames = clip[2]
    status, headers, body = get(s.url)
    assert status == 200 and b"player.js" in body and headers["Content-Type"].startswith("text/html")
    for name in ("player.js", "player.css"):
        assert get(s.url + name)[0] == 200
    info = json.loads(get(s.url + "info")[2])
    assert info == {"title": "nerva", "model": "nerv", "frames": 20, "width": 48, "height": 32, "fps": 25.0,
                    "batch": decoder.DEFAULT_BATCH, "reference": True, "bytes": len(clip[3]),
                    "bpp": 8 * len(clip[3]) / (20 * 32 * 48)}
    for i in (7, 0, 19):
        status, headers, body = get(s.url + f"frame/{i}")
        rgba = np.frombuffer(body, np.uint8).reshape(32, 48, 4)
        assert status == 200 and headers["Content-Type"] == "application/octet-stream"
        np.testing.assert_array_equal(rgba[..., :3], frames[i])
        assert (rgba[..., 3] == 255).all()
        assert float(headers["X-Decode-Ms"]) > 0
        want = float(psnr(reference[i][None], frames[i][None])[0])   # the convention of every report
        assert float(headers["X-PSNR"]) == pytest.approx(want, abs=1e-3)
        ref = np.frombuffer(get(s.url + f"reference/{i}")[2], np.uint8).reshape(32, 48, 4)
        np.testing.assert_array_equal(ref[..., :3], reference[i])
    assert get(s.url + "frame/20")[0] == 404
    assert get(s.url + "frame/x")[0] == 404
    assert get(s.url + "nothing")[0] == 404


def test_requests_a_few_frames_out_of_order_are_playback_not_seeks(clip):
    """A page keeps several frame requests in flight; they may reach the server out of order."""
    with Player(clip[:2], batch=2, prefetch=2) as p:   # seek window: 8 frames
        for i in (0, 4, 1, 3, 2, 9, 5):
            p.frame(i)
        assert p._generation == 1                      # only the first request started one
        p.frame(18)
        assert p._generation == 2
