"""`nerva play`: a local web page that plays a .nerva file, decoding frames on demand (codec.player).

The server binds 127.0.0.1 only. Every URL it answers lives under a random per-run token
(`http://127.0.0.1:PORT/TOKEN/`), so another local user or a web page that guesses the port gets 403.
Routes under the token:

    ''  index.html, player.js, player.css   the page (codec/player_page/, no CDN)
    info                                    JSON: geometry, fps, model, bytes, bpp, batch, reference
    frame/I                                 frame I as raw RGBA bytes (W·H·4, row-major), no re-encoding;
                                            headers X-Decode-Ms, X-Cached, X-PSNR (with a reference)
    reference/I                             the reference's frame I, raw RGBA (with --reference)

A frame request abandoned by a seek (codec.player.Cancelled) is answered 409.
"""

from __future__ import annotations

import hmac
import http.server
import json
import os
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
    """The HTTP side of the player: a ThreadingHTTPServer on 127.0.0.1 serving one Player."""

    def __init__(self, player: Player, reference: np.ndarray | None = None, port: int = 0,
                 file_bytes: int | None = None, title: str = "nerva"):
        self.player, self.reference, self.title = player, reference, title
        self.file_bytes = file_bytes
        self.token = secrets.token_urlsafe(24)
        self._psnr: dict[int, float] = {}
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._httpd.daemon_threads = True
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
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()
        self.player.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _handler_for(server: PlayServer):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"   # keep-alive: playback is a stream of small requests

        def log_message(self, *args):   # quiet: the terminal shows the URL, not every frame
            pass

        def handle(self):
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):   # the page abandoned a request, or closed
                pass

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
            if kind in ("frame", "reference") and index.isdigit():
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
                prefetch: int = 4, cache_mb: float = 256) -> PlayServer:
    """A PlayServer for the .nerva file at `path` (not started), its decoder compiled."""
    data = api.read_file(path)
    player = Player(data, batch=batch, prefetch=prefetch, cache_mb=cache_mb)
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
                         args.prefetch, args.cache_mb)
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
