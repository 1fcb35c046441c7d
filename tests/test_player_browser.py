"""`nerva play` end to end in headless Chromium: the page shows exactly `nerva decode`'s pixels, plays, seeks,
and the server refuses requests without the token. Needs Debian's `chromium` (`.ci/run` installs it) and
Playwright (the test extra); without them this test fails: it does not skip."""

import base64
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from codec.play import find_chromium, open_server
from eval.cli import main
from inr.video import bundled_clip, read_video

CARPHONE = bundled_clip("carphone")
T, K = 12, 9




@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A small NeRV fitted to carphone's first 12 frames (176×144)."""
    out = tmp_path_factory.mktemp("play") / "carphone.nerva"
    assert main(["fit", str(CARPHONE), "-o", str(out), "--model", "nerv", "--size", "12k", "--epochs", "2",
                 "--frames", f"0:{T}", "--quiet", "--seed", "0"]) == 0
    return out


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        path = find_chromium()
        if not path:
            pytest.fail("no Chromium: install Debian's `chromium` package (.ci/run does) or set NERVA_CHROMIUM")
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def canvas_rgba(page, h, w) -> np.ndarray:
    return np.frombuffer(base64.b64decode(page.evaluate("nerva.pixels()")), np.uint8).reshape(h, w, 4)


def test_the_canvas_shows_exactly_nerva_decodes_frame_after_playing_and_seeking(fitted, browser, tmp_path):
    assert main(["decode", str(fitted), "-o", f"{tmp_path / 'png'}/", "--frames", f"{K}:{K + 1}"]) == 0
    want = read_video(tmp_path / "png").frames[0]
    errors = []
    with open_server(fitted, reference=CARPHONE).start() as server:
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url)
        page.wait_for_function("document.body.dataset.ready === '1'", timeout=60_000)
        assert page.evaluate("nerva.state().frames") == T
        page.evaluate("nerva.play()")
        page.wait_for_function("Number(document.body.dataset.frame) >= 4", timeout=30_000)
        played = page.evaluate("nerva.state()")
        assert played["playing"] or played["index"] == T - 1
        page.evaluate("nerva.pause()")
        seek_ms = page.evaluate(f"nerva.seek({K})")
        state = page.evaluate("nerva.state()")
        assert state["index"] == K and state["showing"] == "frame" and seek_ms > 0
        rgba = canvas_rgba(page, 144, 176)
        np.testing.assert_array_equal(rgba[..., :3], want)     # bit-exact: raw bytes, no re-encoding
        assert (rgba[..., 3] == 255).all()
        source = read_video(CARPHONE, K, K + 1).frames[0]
        mse = np.mean((source.astype(float) - want) ** 2)
        assert state["psnr"] == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-3)
        page.evaluate("nerva.toggleAB()")                      # A/B: the source, unchanged
        page.wait_for_function("nerva.state().showing === 'reference'")
        np.testing.assert_array_equal(canvas_rgba(page, 144, 176)[..., :3], source)
        # the page's own origin, without the token in the path: refused
        assert page.evaluate(f"fetch('/frame/{K}').then(r => r.status)") == 403
        assert page.evaluate(f"fetch('frame/{K}').then(r => r.status)") == 200
        assert page.evaluate("document.getElementById('error').hidden")   # no error shown
        page.close()
    assert not errors


def test_nerva_play_serves_until_interrupted_and_refuses_requests_without_the_token(fitted):
    # A pytest-xdist worker may run with SIGINT ignored (something earlier in the worker set it), and a child
    # inherits an ignored signal: it would never see the Ctrl-C. With a handler in this process instead, the
    # child starts with the default action, as from a terminal (no preexec_fn: forking a JAX process is unsafe).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        p = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "eval.cli", "play", str(fitted),
                              "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        lines = [p.stdout.readline(), p.stdout.readline()]
        url = lines[1].split()[1]
        assert lines[0].startswith(f"playing {fitted}: {T} frames 176x144") and url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + f"frame/{K}", timeout=60) as r:
            assert r.status == 200 and len(r.read()) == 176 * 144 * 4
        port_root = url.rsplit("/", 2)[0]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{port_root}/frame/{K}", timeout=60)
        assert refused.value.code == 403
    finally:
        p.send_signal(signal.SIGINT)
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:   # show where it hangs: faulthandler dumps every thread on SIGABRT
            p.send_signal(signal.SIGABRT)
            out, err = p.communicate(timeout=60)
            pytest.fail(f"nerva play did not stop within 60 s of Ctrl-C; its threads:\n{err[-8000:]}")
    assert p.returncode == 0, err
    assert "stopped" in out


@pytest.mark.parametrize("argv, words", [
    (["play", "missing.nerva", "--no-browser"], ["missing.nerva", "no such .nerva file"]),
    (["play", "{file}", "--no-browser", "--reference", "nothing.mp4"], ["nothing.mp4", "no such file"]),
    (["play", "{file}", "--no-browser", "--reference", str(CARPHONE), "--reference-start", "115"],
     ["--reference must hold the file's 12 frames from frame 115"]),
    (["play", "{file}", "--port", "70000"], ["--port: must lie in 0..65535"]),
    (["play", "{file}", "--prefetch", "-1"], ["--prefetch: must be >= 0"]),
])
def test_bad_input_to_nerva_play_is_one_line_error(fitted, argv, words, capsys):
    started = time.monotonic()
    assert main([a.replace("{file}", str(fitted)) for a in argv]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nerva: error:"), err
    for w in words:
        assert w in err[0], err
    assert time.monotonic() - started < 60
