"""`nerva play`: a local web page that plays a .nerva file, decoding frames on demand (codec.player).

The server binds 127.0.0.1 only. Every URL it answers lives under a random per-run token
(`http://127.0.0.1:PORT/TOKEN/`), so another local user or a web page that guesses the port gets 403.
Routes under the token:

    ''  index.html, player.js, player.css   the page (codec/player_page/, no CDN)
    info                                    JSON: geometry, fps, model, bytes, bpp, batch, reference
    frame/I                                 frame I as raw RGBA bytes (W·H·4, row-major), no re-encoding;
                                            headers X-Decode-Ms, X-Cached, X-PSNR (with a reference)
    reference/I                             the reference's frame I, raw RGBA (with --reference)

A frame request abandoned by a seek (codec.player.Cancelled) is answered 409. A frame index is 1 to 10
ASCII digits (anything else is 404). Hostile or idle clients are bounded: a connection that sends nothing
for IDLE_TIMEOUT_S is closed, at most MAX_CONNECTIONS are served at once (further ones wait in the listen
backlog of LISTEN_BACKLOG, the kernel's SYN queue beyond it).
"""

from __future__ import annotations

import hmac
import http.server
import json
import os
import re
import secrets
import shutil
import threading
import urllib.parse
import webbrowser
from importlib import resources
from pathlib import Path

import numpy as np

from codec import api, metrics
from codec.decoder import DEFAULT_BATCH
from codec.player import Cancelled, Player
from inr import registry
from inr.errors import ConfigError, VideoError
from inr.video import read_video

IDLE_TIMEOUT_S = 15.0   # a keep-alive browser connection idle this long is closed (the page reconnects at once)
MAX_CONNECTIONS = 32    # handler threads; a page uses ~6 connections, so 5 pages play at once
LISTEN_BACKLOG = 256    # connections the kernel queues before anyone accepts them (socketserver's default: 5)
_INDEX = re.compile(r"[0-9]{1,10}")   # str.isdigit() also accepts "²" and "١", and int() of 5,000 digits raises

_HTML = "text/html; charset=utf-8"
PAGE_FILES = {"": ("index.html", _HTML), "index.html": ("index.html", _HTML),   # route -> (file, type)
              "player.js": ("player.js", "text/javascript; charset=utf-8"),
              "player.css": ("player.css", "text/css; charset=utf-8")}


def rgba(frame: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> raw RGBA bytes, alpha 255 (what a canvas ImageData holds)."""
    out = np.full(frame.shape[:2] + (4,), 255, np.uint8)
    out[..., :3] = frame
    return out.tobytes()


def find_chromium() -> str | None:
    """A Chromium for scripts that drive the page (tests, bench/player.py): $NERVA_CHROMIUM or on PATH."""
    return os.environ.get("NERVA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def load_reference(path, start: int, config) -> np.ndarray:
    """The source frames [start, start+T) at the file's frame size (resized as `nerva fit --resize` does)."""
    g = config.geometry
    first = read_video(path, start, start + 1).frames   # its own errors: missing, unreadable, start past the end
    size = None if first.shape[1:3] == (g.height, g.width) else (g.height, g.width)
    try:
        return read_video(path, start, start + g.frames, size=size).frames
    except VideoError as e:
        raise VideoError(f"--reference must hold the file's {g.frames} frames from frame {start}: {e}") from None


class PlayServer:
    """The HTTP side of the player: a threading HTTP server on 127.0.0.1 serving one Player.

    Args:
      idle_timeout: seconds a connection may stay silent (per socket read or write) before it is closed.
      max_connections: connections served at once; more wait in the listen backlog.
    """

    def __init__(self, player: Player, reference: np.ndarray | None = None, port: int = 0,
                 file_bytes: int | None = None, title: str = "nerva", idle_timeout: float = IDLE_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS):
        self.player, self.reference, self.title = player, reference, title
        self.file_bytes = file_bytes
        self.token = secrets.token_urlsafe(24)
        self._psnr: dict[int, float] = {}
        self._httpd = _BoundedServer(("127.0.0.1", port), _handler_for(self, idle_timeout), max_connections)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.token}/"

    def info(self) -> dict:
        c = self.player.config
        g = c.geometry
        out = {"title": self.title, "model": registry.spec_of(c).name, "frames": g.frames, "width": g.width,
               "height": g.height, "fps": g.fps, "batch": self.player.batch, "reference": self.reference is not None}
        if self.file_bytes is not None:
            out |= {"bytes": self.file_bytes, "bpp": 8 * self.file_bytes / g.pixels}
        return out

    def psnr(self, i: int, frame: np.ndarray) -> float:
        """Frame i's RGB PSNR against the reference (codec.metrics, the convention of every report)."""
        if i not in self._psnr:
            self._psnr[i] = float(metrics.psnr(self.reference[i][None], frame[None])[0])
        return self._psnr[i]

    def start(self) -> "PlayServer":
        """Serves in a background thread (tests, notebooks); `serve_forever` blocks instead."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="nerva-play", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def close(self) -> None:
        self._httpd.closing.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()
        self.player.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _BoundedServer(http.server.ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once: the accept loop waits for a free slot,
    leaving further connections queued in the listen backlog."""

    daemon_threads = True
    block_on_close = False   # close() never joins handlers (daemon threads): an idle tab would hold it up
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address, handler, max_connections: int):
        self._slots = threading.BoundedSemaphore(max_connections)
        self.closing = threading.Event()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        while not self._slots.acquire(timeout=0.1):   # wake up now and then: shutdown() waits for this loop
            if self.closing.is_set():
                return self.shutdown_request(request)
        try:
            super().process_request(request, client_address)   # starts the handler thread
        except Exception:   # the thread did not start, so its slot is still ours to give back
            self._slots.release()
            raise
        # A KeyboardInterrupt passes untouched: it can arrive after the thread started (while start() waits
        # for it), when the thread frees the slot itself; releasing it here too raised ValueError, which
        # socketserver swallowed as a request error, and Ctrl-C no longer stopped `nerva play`.

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        if not self.closing.is_set():   # a handler cut short by close() (its player is gone) is no news
            super().handle_error(request, client_address)


def _handler_for(server: PlayServer, idle_timeout: float):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"   # keep-alive: playback is a stream of small requests
        timeout = idle_timeout          # per socket operation: an idle or stalled client is dropped

        def log_message(self, *args):   # quiet: the terminal shows the URL, not every frame
            pass

        def handle(self):
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError, TimeoutError):   # the page abandoned a request,
                pass                                                           # closed, or stalled

        def do_GET(self):
            self._route()

        def _route(self):
            parts = urllib.parse.urlsplit(self.path).path.lstrip("/").split("/", 1)
            if not hmac.compare_digest(parts[0].encode(), server.token.encode()):
                return self._send(403, b"forbidden: this URL needs the token nerva play printed\n", "text/plain")
            rest = parts[1] if len(parts) > 1 else None
            if rest is None:   # /TOKEN -> /TOKEN/ so that the page's relative URLs keep the token
                self.send_response(301)
                self.send_header("Location", f"/{server.token}/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if rest in PAGE_FILES:
                name, kind = PAGE_FILES[rest]
                return self._send(200, resources.files("codec").joinpath("player_page", name).read_bytes(), kind)
            if rest == "info":
                return self._send(200, json.dumps(server.info()).encode(), "application/json")
            kind, _, index = rest.partition("/")
            if kind in ("frame", "reference") and _INDEX.fullmatch(index):
                return self._frame(kind, int(index))
            return self._send(404, b"not found\n", "text/plain")

        def _frame(self, kind: str, i: int):
            p = server.player
            if not 0 <= i < p.num_frames:
                return self._send(404, f"frame {i} is outside the file's {p.num_frames} frames\n".encode(),
                                  "text/plain")
            if kind == "reference":
                if server.reference is None:
                    return self._send(404, b"no reference: start nerva play with --reference\n", "text/plain")
                return self._send(200, rgba(server.reference[i]), "application/octet-stream")
            try:
                frame, info = p.frame_with_info(i)
            except Cancelled:
                return self._send(409, b"superseded by a seek\n", "text/plain")
            headers = {"X-Decode-Ms": f"{info.decode_ms:.3f}", "X-Cached": str(int(info.cached))}
            if server.reference is not None:
                headers["X-PSNR"] = f"{server.psnr(i, frame):.4f}"
            self._send(200, rgba(frame), "application/octet-stream", headers)

        def _send(self, status: int, body: bytes, kind: str, headers: dict | None = None):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    return Handler


def open_server(path, reference=None, reference_start: int = 0, port: int = 0, batch: int = DEFAULT_BATCH,
                prefetch: int = 4, cache_mb: float | None = 256, priors=()) -> PlayServer:
    """A PlayServer for the .nerva file at `path` (not started), its decoder compiled (`priors`: where else to
    look for the file's prior, if it has one)."""
    data = api.read_file(path)
    config, variables = api.decompress(data, priors)
    try:
        player = Player((config, variables), batch=batch, prefetch=prefetch, cache_mb=cache_mb)
    except ValueError as e:   # a cache too small for one batch of this file's frames
        raise ConfigError(f"--cache-mb: {e}") from None
    try:
        ref = None if reference is None else load_reference(reference, reference_start, player.config)
        player.warmup()
    except BaseException:
        player.close()
        raise
    try:
        return PlayServer(player, ref, port, len(data), title=Path(path).name)
    except OSError as e:   # the bind: port in use or not allowed
        player.close()
        raise ConfigError(f"cannot listen on 127.0.0.1:{port}: {e.strerror or e}") from None


def cmd_play(args) -> int:
    server = open_server(args.file, args.reference, args.reference_start, args.port, args.batch,
                         args.prefetch, args.cache_mb, [args.prior] if args.prior else [])
    g = server.player.config.geometry
    print(f"playing {args.file}: {g.frames} frames {g.width}x{g.height} at {g.fps:.3f} fps", flush=True)
    print(f"open {server.url}   (Ctrl-C stops)", flush=True)
    if not args.no_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.close()
    return 0
