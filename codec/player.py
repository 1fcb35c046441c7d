"""The decode engine behind `nerva play`, `nerva decode` and notebooks: frames on demand from a .nerva file.

    p = Player("clip.nerva")
    p.frame(57)            # (H, W, 3) uint8: decodes the aligned batch holding frame 57, prefetches ahead
    p.frames(10, 20)       # (10, H, W, 3)
    for f in p: ...        # every frame in order
    %timeit p.decode(57)   # one forward pass, no cache: the raw decode cost

One worker thread owns decoding (one forward pass at a time: on a CPU a second concurrent pass would only
share the same cores). It decodes, in this order: the batch holding the playhead (the last requested
frame), other batches callers wait for, then `prefetch` batches ahead of the playhead. Decoded batches stay
in a cache capped in bytes (the prefetch shrinks to fit the cap); the batches farthest behind the playhead
go first, then the farthest ahead.
A request far from the previous one is a *seek*: it starts a new generation, the queue is recomputed from
the new playhead (stale prefetch is never started), and callers still waiting on batches of the old
generation give up with `Cancelled` (the browser page has abandoned them), except those waiting on the new
playhead's batch or the one in flight. A batch in flight finishes (a forward pass cannot be interrupted),
so a seek waits at most for it and for its own batch.

Frames are rendered in aligned batches (codec.decoder.decode_batch), so a frame's pixels are the same
whichever way it was reached: playing, seeking, `frames(a, b)` or `nerva decode`.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time

import numpy as np

from codec import api
from codec.decoder import DEFAULT_BATCH, decode_batch
from inr.errors import NervaError


class Cancelled(Exception):
    """A frame request superseded by a seek before its batch was decoded."""


@dataclasses.dataclass(frozen=True)
class FrameInfo:
    index: int
    decode_ms: float     # forward-pass time of the frame's batch divided by its frames
    cached: bool         # already decoded when asked for (prefetch or an earlier request)


@dataclasses.dataclass
class _Batch:
    frames: np.ndarray   # (n, H, W, 3) uint8
    ms: float            # forward-pass wall time of the whole batch


def _batches_in(cache_mb: float, batch: int, geometry) -> int:
    """How many decoded batches a cache of cache_mb MiB holds; a ValueError below one."""
    batch_bytes = geometry.height * geometry.width * 3 * min(batch, geometry.frames)
    if not (cache_mb >= 0 and math.isfinite(cache_mb)):
        raise ValueError(f"the cache size must be a finite number of MiB >= 0, not {cache_mb}")
    n = int(cache_mb * 2**20) // batch_bytes
    if n < 1:
        raise ValueError(f"a cache of {cache_mb:g} MiB cannot hold one batch of {min(batch, geometry.frames)} "
                         f"frames of {geometry.width}x{geometry.height} ({batch_bytes / 2**20:.3g} MiB)")
    return n


class Player:
    """Frames of one .nerva file decoded on demand, with prefetch and a bounded cache.

    Args:
      source: a path, the bytes of a .nerva file, or a decoded (config, variables) pair.
      batch: frames per forward pass (compiled once per model config and batch size).
      prefetch: batches decoded ahead of the playhead, at most what the cache holds besides the
        playhead's batch (`self.prefetch` is the number in effect).
      cache_mb: a hard cap, in MiB, on the decoded frames the cache keeps; a cap below one batch is a
        ValueError. None: room for the playhead's batch, the prefetch and one more.
      seek_window: a request more than this many frames away from the previous one counts as a seek.
      priors: where else to look for the file's prior, if it has one (codec.assets.find).
    """

    def __init__(self, source, batch: int = DEFAULT_BATCH, prefetch: int = 4, cache_mb: float | None = 256,
                 seek_window: int | None = None, priors=()):
        if isinstance(source, tuple):
            self.config, self.variables = source
        else:
            data = source if isinstance(source, (bytes, bytearray)) else api.read_file(source)
            self.config, self.variables = api.decompress(bytes(data), priors)
        if batch < 1 or prefetch < 0:
            raise ValueError("batch must be >= 1 and prefetch >= 0")
        g = self.config.geometry
        self.batch = batch
        self.n_batches = -(-g.frames // batch)
        self.cache_batches = prefetch + 2 if cache_mb is None else _batches_in(cache_mb, batch, g)
        self.prefetch = min(prefetch, self.cache_batches - 1)
        self.seek_window = (self.prefetch + 2) * batch if seek_window is None else seek_window
        self._cond = threading.Condition()
        self._cache: dict[int, _Batch] = {}
        self._waiting: collections.Counter = collections.Counter()   # (batch, generation) -> callers waiting
        self._inflight: int | None = None
        self._head = 0            # batch of the playhead
        self._last = None         # the last requested frame
        self._generation = 0
        self._error: BaseException | None = None
        self._closed = False
        self._worker: threading.Thread | None = None
        self.stats = collections.Counter()   # decoded_batches, hits, misses, cancelled

    # -- what the file is -------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return self.config.geometry.frames

    @property
    def height(self) -> int:
        return self.config.geometry.height

    @property
    def width(self) -> int:
        return self.config.geometry.width

    @property
    def fps(self) -> float:
        return self.config.geometry.fps

    def __len__(self) -> int:
        return self.num_frames

    # -- frames -----------------------------------------------------------------------------------
    def frame(self, i: int) -> np.ndarray:
        """Frame i, (H, W, 3) uint8 (read-only; copy to modify)."""
        return self.frame_with_info(i)[0]

    def frame_with_info(self, i: int) -> tuple[np.ndarray, FrameInfo]:
        """Frame i and how it was obtained. Raises IndexError out of range, Cancelled if a seek elsewhere
        superseded the request while it waited (only possible with several concurrent callers)."""
        i = self._check(i)
        b = i // self.batch
        with self._cond:
            self._start()
            # symmetric: a page's pipelined requests may arrive a few frames out of order
            seek = self._last is None or abs(i - self._last) > self.seek_window
            if seek:
                self._generation += 1
            self._last, self._head = i, b
            generation = self._generation
            cached = b in self._cache
            self.stats["hits" if cached else "misses"] += 1
            self._waiting[b, generation] += 1
            self._cond.notify_all()
            try:
                while b not in self._cache:
                    if isinstance(self._error, NervaError):   # e.g. no memory for the decode program
                        raise self._error
                    if self._error is not None:
                        raise RuntimeError(f"decoding failed: {self._error}") from self._error
                    if self._closed:
                        raise RuntimeError("the player is closed")
                    if self._generation != generation and b not in (self._head, self._inflight):
                        self.stats["cancelled"] += 1
                        raise Cancelled(f"frame {i}: superseded by a seek")
                    self._cond.wait()
                entry = self._cache[b]
            finally:
                self._waiting[b, generation] -= 1
                if not self._waiting[b, generation]:
                    del self._waiting[b, generation]
        frame = entry.frames[i - b * self.batch]
        return frame, FrameInfo(i, entry.ms / entry.frames.shape[0], cached)

    def frames(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames [start, stop) as (N, H, W, 3) uint8, decoded in order with prefetch."""
        stop = self.num_frames if stop is None else stop
        if not 0 <= start <= stop <= self.num_frames:
            raise IndexError(f"frame range {start}:{stop} must lie within [0, {self.num_frames}]")
        out = np.empty((stop - start, self.height, self.width, 3), np.uint8)
        for i in range(start, stop):
            out[i - start] = self.frame(i)
        return out

    def __iter__(self):
        for i in range(self.num_frames):
            yield self.frame(i)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.frame(i)

    def decode(self, i: int) -> np.ndarray:
        """One forward pass for the batch holding frame i, bypassing cache and worker (for %timeit)."""
        return decode_batch(self.config, self.variables, self._check(i) // self.batch, self.batch)

    def warmup(self) -> float:
        """Compiles the decoder (if not yet compiled for this config and batch); returns the seconds taken."""
        t = time.perf_counter()
        self.decode(0)
        return time.perf_counter() - t

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals --------------------------------------------------------------------------------
    def _check(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, not {type(i).__name__}")
        if not 0 <= i < self.num_frames:
            raise IndexError(f"frame {i} is outside the file's {self.num_frames} frames")
        return int(i)

    def _start(self) -> None:
        if self._closed:
            raise RuntimeError("the player is closed")
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="nerva-player", daemon=True)
            self._worker.start()

    def _next(self) -> int | None:
        """The batch to decode next (called with the lock held): the playhead's, then the ones callers of
        this generation wait for (nearest ahead first), then the prefetch window."""
        if self._last is None:
            return None
        waiting = sorted({b for b, gen in self._waiting if gen == self._generation},
                         key=lambda b: (b < self._head, abs(b - self._head)))
        ahead = range(self._head + 1, min(self._head + 1 + self.prefetch, self.n_batches))
        return next((b for b in (self._head, *waiting, *ahead) if b not in self._cache), None)

    def _evict(self, newest: int) -> None:
        """Drops batches until the cache holds at most cache_batches, never the one just decoded: first
        those neither in the prefetch window nor waited for (behind the playhead first, farthest first), then
        the farthest ahead. Concurrent callers waiting on more batches than the cap holds may see theirs
        dropped before they read it; it is then decoded again (the cap holds, the work repeats)."""
        keep = set(range(self._head, self._head + 1 + self.prefetch)) | {b for b, _ in self._waiting}
        while len(self._cache) > self.cache_batches:
            far = max((b for b in self._cache if b != newest),
                      key=lambda b: (b not in keep, b < self._head, abs(b - self._head)))
            del self._cache[far]

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (b := self._next()) is None:
                    self._cond.wait()
                if self._closed:
                    return
                self._inflight = b
            try:
                t = time.perf_counter()
                frames = decode_batch(self.config, self.variables, b, self.batch)
                ms = 1000 * (time.perf_counter() - t)
            except BaseException as e:   # reported to every waiting caller
                with self._cond:
                    self._error, self._inflight = e, None
                    self._cond.notify_all()
                return
            frames.setflags(write=False)
            with self._cond:
                self._cache[b] = _Batch(frames, ms)
                self._inflight = None
                self.stats["decoded_batches"] += 1
                self._evict(b)
                self._cond.notify_all()
