"""`AtomicModelParallelStrategy`: Lightning's FSDP2 strategy whose sharded checkpoints appear whole or not at all.

Lightning writes a sharded (DCP) checkpoint straight into its final folder, so a save that fails
half-way (a full disk, a killed rank) leaves a folder that mixes new and old shards, or has no
metadata, and ``save_last`` overwrites the only good copy in place. ``ModelParallelStrategy`` does not
go through a ``CheckpointIO`` plugin, so the fix sits here: every rank writes into a hidden
``.<name>.partial`` folder, the ranks agree that all of them succeeded, and only then rank 0 swaps it in.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.checkpoint.api import CheckpointException


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def swap_in(partial: Path, path: Path) -> None:
    """Replace ``path`` (a file, a folder or nothing) with ``partial``. The previous checkpoint is
    renamed aside first, so the only moment without ``path`` is between two renames."""
    old = path.with_name(f".{path.name}.old")
    _remove(old)
    if path.exists():
        path.rename(old)
    partial.rename(path)
    _remove(old)


class AtomicModelParallelStrategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` (FSDP2, tensor parallelism) with atomic sharded checkpoints.

    A failed save raises on every rank and leaves the previous checkpoint of that name intact and no
    partial folder; a run killed during a save leaves only a hidden ``.<name>.partial`` folder, which
    no checkpoint callback lists and the next save of that name removes. Single-file checkpoints
    (``save_distributed_checkpoint: false``) go through Lightning's own save unchanged.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None
    ) -> None:
        if not self._save_distributed_checkpoint:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        path = Path(self.broadcast(str(filepath)))
        partial = partial_path(path)
        if self.global_rank == 0:
            _remove(partial)  # left by a run killed while saving
        self.barrier("atomic_checkpoint_start")
        error: BaseException | None = None
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
        # DCP raises CheckpointException (a BaseException) on every rank together; the metadata file
        # is written by rank 0 alone.
        except (Exception, CheckpointException) as e:
            error = e
        if self.reduce_boolean_decision(error is not None, all=False):
            if self.global_rank == 0:
                shutil.rmtree(partial, ignore_errors=True)
            self.barrier("atomic_checkpoint_failed")
            if error is not None:
                raise error
            raise RuntimeError(f"saving checkpoint {path} failed on another rank; the previous one is kept")
        if self.global_rank == 0:
            swap_in(partial, path)
        self.barrier("atomic_checkpoint_done")
