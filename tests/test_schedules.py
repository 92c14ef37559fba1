"""Schedules over the run's progress: their values at known fractions, the run's progress from epochs, steps and
time, compression by a budget keeping the ratio of phase lengths, and a real Lightning fit feeding them."""

from __future__ import annotations

import math
from datetime import timedelta

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Timer

from lightning_gm.callbacks.run_progress import RunProgress
from lightning_gm.schedules import BurdaLR, CosineProgressLR, LinearProgressLR, PhasedLR, run_progress


def _opt(lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _lr_at(scheduler, p: float) -> float:
    scheduler.set_progress(p)
    return scheduler.optimizer.param_groups[0]["lr"]


def test_burda_schedule_at_known_fractions():
    """Phase i lasts 3^i of 3,280 epochs at 1e-3 * 10^(-i/7): epoch e of the paper's run is at p = e / 3280."""
    s = BurdaLR(_opt(1e-3))
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # before any progress
    starts = [0, 1, 4, 13, 40, 121, 364, 1093]  # first epoch of each phase: (3^i - 1) / 2
    for i, start in enumerate(starts):
        expected = 1e-3 * 10 ** (-i / 7)
        assert _lr_at(s, (start + 0.5) / 3280) == pytest.approx(expected, rel=1e-12)
        assert _lr_at(s, start / 3280) == pytest.approx(expected, rel=1e-12)  # a phase starts at its boundary
    assert _lr_at(s, 1.0) == pytest.approx(1e-4, rel=1e-12)
    assert _lr_at(s, 3279.9 / 3280) == pytest.approx(1e-4, rel=1e-12)
    assert _lr_at(s, 1092.9 / 3280) == pytest.approx(1e-3 * 10 ** (-6 / 7), rel=1e-12)


def test_phased_linear_and_cosine_values():
    s = PhasedLR(_opt(2.0), factors=[1.0, 0.5, 0.1], durations=[1, 1, 2])
    assert [_lr_at(s, p) for p in (0.0, 0.24, 0.25, 0.49, 0.5, 1.0)] == [2.0, 2.0, 1.0, 1.0, 0.2, 0.2]
    lin = LinearProgressLR(_opt(1.0), start_factor=1.0, end_factor=0.01)
    assert _lr_at(lin, 0.5) == pytest.approx(0.505) and _lr_at(lin, 1.0) == pytest.approx(0.01)
    cos = CosineProgressLR(_opt(1.0), min_factor=0.1)
    assert _lr_at(cos, 0.0) == pytest.approx(1.0) and _lr_at(cos, 0.5) == pytest.approx(0.55)
    assert _lr_at(cos, 1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="one duration per factor"):
        PhasedLR(_opt(), factors=[1.0, 0.5], durations=[1])


class _FakeTrainer:
    """What :func:`run_progress` reads from a Lightning trainer."""

    def __init__(self, max_epochs=None, max_steps=-1, batches=10, timer=None):
        self.max_epochs, self.max_steps, self.num_training_batches = max_epochs, max_steps, batches
        self.current_epoch, self.global_step = 0, 0
        self.callbacks = [timer] if timer is not None else []


class _FakeTimer(Timer):
    def __init__(self, duration: float):
        super().__init__(duration=timedelta(seconds=duration))
        self.elapsed = 0.0

    def time_elapsed(self, stage="train"):
        return self.elapsed

    def time_remaining(self, stage="train"):
        return self._duration - self.elapsed


def test_run_progress_is_the_largest_fraction_of_epochs_steps_and_time():
    t = _FakeTrainer(max_epochs=10, batches=4)
    t.current_epoch = 3
    assert run_progress(t, 3 + 2 / 4) == pytest.approx(3.5 / 10)
    assert run_progress(t) == pytest.approx(3 / 10)
    t.max_steps, t.global_step = 100, 60
    assert run_progress(t, 3.5) == pytest.approx(0.6)
    timer = _FakeTimer(duration=3600)
    timer.elapsed = 2700
    t.callbacks = [timer]
    assert run_progress(t, 3.5) == pytest.approx(0.75)
    t.current_epoch = 12  # past the end: clipped
    assert run_progress(t) == 1.0


def test_a_time_budget_compresses_the_schedule_keeping_the_ratio_of_phase_lengths():
    """The paper's 3,280 epochs, but the hour runs out after 41 epochs of 50 batches: the learning rate still
    visits all 8 phases, each 3 times as long as the one before (to within one batch), and ends at 1e-4."""
    timer = _FakeTimer(duration=3600.0)
    trainer = _FakeTrainer(max_epochs=3280, batches=50, timer=timer)
    s = BurdaLR(_opt(1e-3))
    seconds_per_batch = 3600.0 / (41 * 50)
    lrs = []
    for step in range(41 * 50):
        trainer.current_epoch, batch = divmod(step, 50)
        timer.elapsed = step * seconds_per_batch
        s.set_progress(run_progress(trainer, trainer.current_epoch + batch / 50))
        lrs.append(s.optimizer.param_groups[0]["lr"])
    levels = [1e-3 * 10 ** (-i / 7) for i in range(8)]
    counts = [sum(1 for lr in lrs if math.isclose(lr, level, rel_tol=1e-9)) for level in levels]
    assert sum(counts) == len(lrs) and min(counts) >= 1
    shares = [c / len(lrs) for c in counts]
    for i, share in enumerate(shares):  # each phase's share of the run is its share of the paper's 3,280 epochs
        assert abs(share - 3**i / 3280) <= 1.0 / len(lrs) + 1e-12
    for a, b in zip(counts[4:], counts[5:]):  # phases long enough to count: ratio 3 up to one batch each
        assert (b - 1) / (a + 1) <= 3.0 <= (b + 1) / (a - 1)
    assert lrs[-1] == pytest.approx(1e-4)


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.seen: list[tuple[int, int, float]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch_idx, self.optimizers().param_groups[0]["lr"]))
        return ((batch[0] - self.w) ** 2).sum()

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=1.0)
        return {"optimizer": opt, "lr_scheduler": PhasedLR(opt, factors=[1.0, 0.1], durations=[1, 3])}

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 3)), batch_size=2)


def _fit(callbacks):
    model = _Tiny()
    pl.Trainer(max_epochs=2, callbacks=callbacks, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False).fit(model)
    return model


def test_lightning_fit_feeds_the_schedule_every_batch():
    model = _fit([RunProgress()])
    # 2 epochs of 4 batches: progress (epoch + b/4) / 2; the first phase is the first quarter of the run
    assert [lr for _, _, lr in model.seen] == [1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]


def test_a_schedule_nothing_feeds_refuses_to_run():
    with pytest.raises(RuntimeError, match="RunProgress"):
        _fit([])
