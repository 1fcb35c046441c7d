"""Orbax checkpoints of the fitting state, tagged with a run id so --resume never mixes two runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from inr.errors import ConfigError


class Checkpointer:
    """Keeps the latest state of one run in `directory` (saved every `every` steps)."""

    def __init__(self, directory: str | Path, run_id: str, every: int):
        self.directory = Path(directory).absolute()
        self.run_id = run_id
        self.every = max(1, every)
        self._mngr = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

    def maybe_save(self, step: int, state, force: bool = False) -> None:
        if force or step % self.every == 0:
            self._mngr.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({"run_id": self.run_id})),
                force=True)

    def restore(self, like) -> tuple[int, object] | None:
        """(step, state) of the latest checkpoint, or None when there is none. `like(step)`: a state tree
        of the saved shapes (which may depend on the step, e.g. each phase's optimizer state)."""
        step = self._mngr.latest_step()
        if step is None:
            return None
        meta = self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if meta.get("run_id") != self.run_id:
            raise ConfigError(f"checkpoint in {self.directory} belongs to a different run (other input, "
                              "model or options); remove it or run without --resume")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like(step))
        out = self._mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        return step, out["state"]

    def close(self, remove: bool = False) -> None:
        """Waits for pending saves and releases the manager; `remove` deletes the directory (idempotent)."""
        if self._mngr is not None:
            self._mngr.wait_until_finished()
            self._mngr.close()
            self._mngr = None
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)
