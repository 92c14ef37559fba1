"""The divergence guard stops at the first NaN loss and leaves the last good checkpoint alone."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_gm.callbacks import DivergenceGuard
from lightning_gm.data import DigitsDataModule
from lightning_gm.errors import DivergenceError
from lightning_gm.models import VAE


class NaNFromStep(VAE):
    """A VAE whose training loss becomes NaN from global step 3 on (the fourth batch)."""

    def loss_terms(self, x, stage):
        terms = super().loss_terms(x, stage)
        if stage == "train" and self.global_step >= 3:
            terms["loss"] = terms["loss"] * math.nan
        return terms


def test_nan_loss_stops_with_named_metric_and_keeps_last_good_checkpoint(tmp_path):
    pl.seed_everything(0)
    dm = DigitsDataModule(binarize="static", batch_size=50)
    model = NaNFromStep(data_shape=dm.shape, latent_dim=2, hidden=(16,))
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_last=True, save_top_k=0)
    trainer = pl.Trainer(
        max_epochs=3, callbacks=[DivergenceGuard(), ckpt], logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
    )
    with pytest.raises(DivergenceError) as info:
        trainer.fit(model, datamodule=dm)
    msg = str(info.value)
    assert "metric 'train/loss' became nan in epoch 0, batch 3 (global step 4)" in msg
    assert str(tmp_path / "last.ckpt") in msg and "left untouched" in msg
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3  # the state after the last finite step
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    # the model in memory did take the NaN step; the checkpoint did not
    assert not all(torch.isfinite(p).all() for p in model.parameters())
