"""codec.player: random access equals sequential decoding, prefetch, the bounded cache, seeks cancelling
stale requests; codec.play's HTTP side: the token, the routes, raw RGBA frames and the PSNR header."""

import json
import socket
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


def test_cache_mb_is_a_hard_cap_even_below_what_the_prefetch_asks_for(clip):
    config, variables, frames, _ = clip
    batch_bytes = 2 * 32 * 48 * 3
    cap = 2.5 * batch_bytes                                    # room for 2 batches, while prefetch=4 wants 6
    with Player((config, variables), batch=2, prefetch=4, cache_mb=cap / 2**20) as p:
        assert (p.cache_batches, p.prefetch) == (2, 1)         # the prefetch shrinks to fit the cap
        for i in [0, 1, 2, 3, 10, 11, 19, 5, 6, 7, 8, 0, 13]:
            np.testing.assert_array_equal(p.frame(i), frames[i])
            with p._cond:                                      # the worker evicts under the same lock
                assert sum(b.frames.nbytes for b in p._cache.values()) <= cap
        wait_until(lambda: p._inflight is None and p._next() is None)
        assert sum(b.frames.nbytes for b in p._cache.values()) <= cap
    with pytest.raises(ValueError, match="cannot hold one batch of 2 frames of 48x32"):
        Player((config, variables), batch=2, cache_mb=0.9 * batch_bytes / 2**20)


def raw_get(port: int, target: bytes) -> bytes:
    """The status line the server answers to a GET of the raw bytes `target` (b"" if it answers nothing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("index", ["\u00b2", "\u00b9", "\u00b3", "9" * 5000, "12345678901", "+1", "-1", "1.0", "0x1", ""])
def test_a_frame_index_other_than_ascii_digits_is_not_found_and_the_server_keeps_serving(server, index):
    """'²' (one latin-1 byte of the request line) passes str.isdigit() and then fails int(); 5,000 digits
    fail int()'s digit limit: each crashed the handler (no answer at all)."""
    s, _ = server
    for kind in ("frame", "reference"):
        target = f"/{s.token}/{kind}/".encode() + index.encode("latin-1")
        assert raw_get(s.port, target) == b"HTTP/1.1 404 Not Found", index
    assert raw_get(s.port, f"/{s.token}/frame/0000000003".encode()) == b"HTTP/1.1 200 OK"   # 10 digits: frame 3


def handler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


def test_idle_connections_are_closed_and_never_hold_more_than_the_bounded_threads(clip):
    with play.PlayServer(Player(clip[3]), idle_timeout=0.5, max_connections=4).start() as s:
        idle = [socket.create_connection(("127.0.0.1", s.port), timeout=30) for _ in range(12)]  # no request
        try:
            wait_until(lambda: len(handler_threads()) == 4)
            time.sleep(0.2)
            assert len(handler_threads()) == 4                 # the other 8 wait in the backlog
            assert get(s.url + "info")[0] == 200               # served once the idle ones time out
            for sock in idle:                                  # each was closed by the server, not by us
                try:
                    assert sock.recv(1) == b""
                except ConnectionResetError:
                    pass
        finally:
            for sock in idle:
                sock.close()


def test_close_returns_while_idle_clients_hold_every_connection(clip):
    s = play.PlayServer(Player(clip[3]), idle_timeout=60, max_connections=2).start()
    idle = [socket.create_connection(("127.0.0.1", s.port), timeout=30) for _ in range(4)]
    try:
        wait_until(lambda: len(handler_threads()) >= 2)
        closer = threading.Thread(target=s.close)
        closer.start()
        closer.join(10)
        assert not closer.is_alive()
    finally:
        for sock in idle:
            sock.close()


def test_connections_queue_in_a_deep_backlog_before_the_server_accepts_any(clip):
    """With socketserver's default backlog of 5, the 7th connect waits for the kernel's SYN retry (1 s, then
    3 s, ...); the server here has not started accepting, so every connect lands in the backlog."""
    with play.PlayServer(Player(clip[3])) as s:
        assert play.LISTEN_BACKLOG >= 200
        socks = []
        try:
            for _ in range(200):
                sock = socket.socket()
                socks.append(sock)
                sock.settimeout(0.5)
                sock.connect(("127.0.0.1", s.port))            # raises TimeoutError once the backlog is full
        finally:
            for sock in socks:
                sock.close()


def test_ctrl_c_while_a_handler_thread_starts_stops_the_server_and_keeps_the_slot_count(clip, monkeypatch):
    """SIGINT can land in process_request after the handler thread started, while start() waits for it, and
    the thread can be done by then: the KeyboardInterrupt must leave the accept loop (it once turned into a
    ValueError from giving the thread's connection slot back twice, which socketserver swallowed as a
    request error, and `nerva play` ignored Ctrl-C)."""
    import socketserver
    started = socketserver.ThreadingMixIn.process_request

    def start_then_interrupt(self, request, client_address):
        started(self, request, client_address)
        wait_until(lambda: self._slots._value == 2)   # the handler (its client gone) has finished
        raise KeyboardInterrupt
    monkeypatch.setattr(socketserver.ThreadingMixIn, "process_request", start_then_interrupt)
    with play.PlayServer(Player(clip[3]), idle_timeout=5, max_connections=2) as s:
        socket.create_connection(("127.0.0.1", s.port), timeout=30).close()
        with pytest.raises(KeyboardInterrupt):
            s._httpd._handle_request_noblock()   # one turn of serve_forever's accept loop
        assert s._httpd._slots._value == 2       # every slot free again, none given back twice
