"""Orbax checkpoints of the fitting state, tagged with a run id and a digest so --resume never mixes two
runs and never trusts a damaged checkpoint."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import shutil
import sys
from pathlib import Path
from typing import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from inr.errors import ConfigError, one_line

KEEP = 2   # checkpoints kept: the one before the latest is the fallback when the latest is damaged


def state_digest(state) -> str:
    """sha256 over every leaf's dtype, shape and bytes, in tree order. Orbax's compressed chunks do not
    catch every flipped byte (a flip inside stored data can restore silently as another number); this does."""
    h = hashlib.sha256()
    for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
        a = np.ascontiguousarray(jax.device_get(x))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Checkpointer:
    """Keeps the latest KEEP states of one run in `directory` (saved every `every` steps).

    `log` receives one line per event the user should know of (a damaged checkpoint skipped, a fresh start).
    """

    def __init__(self, directory: str | Path, run_id: str, every: int, log: Callable[[str], None] = _stderr):
        self.directory = Path(directory).absolute()
        self.run_id = run_id
        self.every = max(1, every)
        self.log = log
        self.last_saved: int | None = None
        # quiet: orbax logs an ERROR line for a step whose own metadata file is torn, though the step still
        # restores (and its state is checked against the digest)
        with _quiet_orbax():
            self._mngr = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
                max_to_keep=KEEP, create=True, cleanup_tmp_directories=True))   # drops saves a kill cut short

    def maybe_save(self, step: int, state, force: bool = False) -> None:
        if not (force or step % self.every == 0) or step == self.last_saved:
            return
        meta = {"run_id": self.run_id, "digest": state_digest(state)}
        self._mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self.last_saved = step

    def restore(self, like) -> tuple[int, object] | None:
        """(step, state) of the latest intact checkpoint, or None when there is none. `like(step)`: a state
        tree of the saved shapes (which may depend on the step, e.g. each phase's optimizer state).

        A damaged checkpoint (torn, truncated, altered, a file missing) is named on `log`, deleted, and the
        one before it tried; with none left the fit starts afresh, which is said too."""
        damaged = []
        with _quiet_orbax():
            steps = sorted(self._mngr.all_steps(), reverse=True)
        for step in steps:
            try:
                with _quiet_orbax():
                    state = self._restore_step(step, like)
            except _Damaged as e:
                damaged.append(step)
                self.log(f"nerva: checkpoint {self.directory / str(step)} is damaged ({e}); "
                         "deleting it and trying the one before")
                self._delete(step)
                continue
            if damaged:
                self.log(f"nerva: resuming from the earlier checkpoint at step {step}")
            self.last_saved = step
            return step, state
        if damaged:
            self.log(f"nerva: no intact checkpoint left in {self.directory}; starting from scratch")
        return None

    def _restore_step(self, step: int, like):
        # Any failure to read a step is damage: orbax and tensorstore raise many unrelated types (JSON,
        # OS, value and tensorstore errors) for torn or altered files.
        try:
            meta = self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:   # noqa: BLE001
            raise _Damaged(f"its run record does not read: {one_line(e, 120)}") from None
        if not isinstance(meta, dict) or "digest" not in meta:
            raise _Damaged("its run record lacks the state digest")
        if meta.get("run_id") != self.run_id:
            raise ConfigError(f"checkpoint in {self.directory} belongs to a different run (other input, "
                              "model or options); remove it or run without --resume")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like(step))
        try:
            args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            state = self._mngr.restore(step, args=args)["state"]
        except Exception as e:   # noqa: BLE001
            raise _Damaged(f"its state does not read: {one_line(e, 120)}") from None
        if state_digest(state) != meta["digest"]:
            raise _Damaged("its state does not match the digest saved with it")
        return state

    def _delete(self, step: int) -> None:
        try:
            self._mngr.delete(step)
        except Exception:   # noqa: BLE001 - a step too damaged for orbax to delete: remove its folder
            shutil.rmtree(self.directory / str(step), ignore_errors=True)
            self._mngr.reload()

    def wait(self) -> None:
        """Blocks until every save so far is committed to disk."""
        self._mngr.wait_until_finished()

    def close(self, remove: bool = False) -> None:
        """Waits for pending saves and releases the manager; `remove` deletes the directory (idempotent), as
        does a run that stopped before saving anything (a fit refused before its first step leaves nothing)."""
        if self._mngr is not None:
            self._mngr.wait_until_finished()
            self._mngr.close()
            self._mngr = None
        if remove or (self.directory.is_dir() and not any(self.directory.iterdir())):
            shutil.rmtree(self.directory, ignore_errors=True)


def _abandoned_reads(record: logging.LogRecord) -> bool:
    """False for asyncio's "Task exception was never retrieved" about an orbax read coroutine that a failed
    restore abandoned (logged when the event loop drops the task, possibly after `_quiet_orbax` returned)."""
    try:
        text = record.getMessage()
    except Exception:   # noqa: BLE001 - a record that does not format is not ours to drop
        return True
    return not ("never retrieved" in text and "async_deserialize" in text)


@contextlib.contextmanager
def _quiet_orbax():
    """Silences what orbax and tensorstore print while failing to read a damaged step (absl ERROR lines,
    and tracebacks of read coroutines abandoned on the failure): the one line `restore` logs says it."""
    logger, hook = logging.getLogger("absl"), sys.unraisablehook
    level = logger.level
    if _abandoned_reads not in logging.getLogger("asyncio").filters:   # logged whenever the loop drops them
        logging.getLogger("asyncio").addFilter(_abandoned_reads)
    logger.setLevel(logging.CRITICAL)
    sys.unraisablehook = lambda _: None
    try:
        yield
    finally:
        gc.collect()   # abandoned coroutines are finalized here, while their tracebacks are still dropped
        sys.unraisablehook = hook
        logger.setLevel(level)


class _Damaged(Exception):
    """A checkpoint step that cannot be trusted; the message says why."""

