"""Faults a run must survive without leaving a broken file behind."""

from __future__ import annotations

import errno
from pathlib import Path

import fsspec.implementations.local as local
import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class Weights(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1000))

    def training_step(self, batch, batch_idx):
        return (self.w**2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class DiskFullAt(L.Callback):
    """From batch ``at`` on, every file write stores half its bytes, then fails with ENOSPC."""

    def __init__(self, at: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.at, self.monkeypatch = at, monkeypatch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.at:
            real = local.LocalFileOpener.write

            def write(opener, data):
                real(opener, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")

            self.monkeypatch.setattr(local.LocalFileOpener, "write", write)


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path: Path, monkeypatch):
    """Checkpoints go through Lightning's atomic save (a temporary file, renamed on success): the
    failed save of step 3 leaves step 2's checkpoint whole and no partial file next to it."""
    ckpt = ModelCheckpoint(tmp_path, "last", every_n_train_steps=1, save_top_k=1)
    trainer = L.Trainer(max_steps=4, callbacks=[ckpt, DiskFullAt(2, monkeypatch)], logger=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with pytest.raises(OSError, match="No space left"):
        trainer.fit(Weights(), torch.utils.data.DataLoader(list(range(8)), batch_size=1))
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert state["global_step"] == 2
