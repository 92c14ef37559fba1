"""The base model's training loop and the opt-in manual loop (``ManualLoop``): the manual loop takes exactly the
steps of Lightning's automatic loop (optimiser, schedulers, gradient clipping as a model argument), and the cheap
training logs give the true epoch means."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_gm.nn.rbm import CD, Penalties
from lightning_gm.errors import ConfigError
from lightning_gm.models.base import GenerativeModel
from lightning_gm.models.manual_loop import ManualLoop
from lightning_gm.models.momentum import MomentumWarmup


class _Quadratic(GenerativeModel):
    """loss = mean_i ||x_i - w||^2 (+ an ``odd`` term present only on odd steps)."""

    def __init__(self, data_shape: Any = (3,), optimizer: Any = None, lr_scheduler: Any = None) -> None:
        super().__init__(data_shape, optimizer or (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5)), lr_scheduler)
        self.w = torch.nn.Parameter(torch.tensor([3.0, -2.0, 1.0]))
        self.seen: list[tuple[float, float | None]] = []

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        loss = (x - self.w).pow(2).sum(-1).mean() * 10.0  # large gradients, so that clipping bites
        terms = {"loss": loss, "w0": self.w[0].detach().clone()}
        if stage == "train" and self.trainer.global_step % 2 == 1:
            terms["odd"] = torch.tensor(float(self.trainer.global_step))
        if stage == "train":
            self.seen.append((float(loss), float(terms["odd"]) if "odd" in terms else None))
        return terms


class _QuadraticManual(ManualLoop, _Quadratic):
    def __init__(self, gradient_clip_val: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.init_manual_loop(gradient_clip_val=gradient_clip_val)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    return DataLoader(TensorDataset(x, torch.zeros(40)), batch_size=8, shuffle=False)


def _fit(cls: type, sched: Any, clip: float | None, tmp_path: Path, name: str) -> tuple[_Quadratic, list[float]]:
    model = cls(lr_scheduler=sched, **({"gradient_clip_val": clip} if cls is _QuadraticManual else {}))
    lrs: list[float] = []

    class LR(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, *a: Any) -> None:
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=pl.loggers.CSVLogger(tmp_path, name=name),
                         log_every_n_steps=2, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[LR()],
                         gradient_clip_val=clip if model.automatic_optimization else None)
    trainer.fit(model, _loader())
    return model, lrs


SCHEDULERS = {
    "none": None,
    "step-epoch": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
    "linear": lambda opt: torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.1, total_iters=3),
}


@pytest.mark.parametrize("sched", list(SCHEDULERS))
@pytest.mark.parametrize("clip", [None, 0.5])
def test_manual_loop_takes_the_automatic_loops_steps(sched: str, clip: float | None, tmp_path: Path) -> None:
    auto, lr_auto = _fit(_Quadratic, SCHEDULERS[sched], clip, tmp_path, "auto")
    manual, lr_manual = _fit(_QuadraticManual, SCHEDULERS[sched], clip, tmp_path, "manual")
    assert auto.automatic_optimization and not manual.automatic_optimization
    assert lr_manual == pytest.approx(lr_auto)
    if sched != "none":
        assert lr_auto[-1] < lr_auto[0]  # the scheduler really stepped
    torch.testing.assert_close(manual.w, auto.w)
    assert not torch.allclose(manual.w, torch.tensor([3.0, -2.0, 1.0]))


def test_epoch_means_and_step_logs(tmp_path: Path) -> None:
    model, _ = _fit(_QuadraticManual, None, None, tmp_path, "logs")
    rows = list(csv.DictReader(open(next(tmp_path.glob("logs/*/metrics.csv")))))
    epoch_rows = [r for r in rows if r.get("train/loss_epoch")]
    assert len(epoch_rows) == 3
    per_epoch = [model.seen[5 * e: 5 * e + 5] for e in range(3)]  # 40 examples / batch 8 = 5 steps per epoch
    for row, steps in zip(epoch_rows, per_epoch):
        assert float(row["train/loss_epoch"]) == pytest.approx(sum(s[0] for s in steps) / 5, rel=1e-5)
        odd = [s[1] for s in steps if s[1] is not None]  # a term present on some steps: its own mean
        assert float(row["train/odd_epoch"]) == pytest.approx(sum(odd) / len(odd), rel=1e-6)
    step_rows = [r for r in rows if r.get("train/loss_step")]
    assert [int(r["step"]) for r in step_rows] == list(range(1, 15, 2))  # log_every_n_steps=2: steps 1, 3, ...
    for r in step_rows:
        assert float(r["train/loss_step"]) == pytest.approx(model.seen[int(r["step"])][0], rel=1e-5)


def test_cli_refuses_trainer_clipping_and_accumulation_for_the_manual_loop(run_cli, capsys) -> None:
    """Clipping is the manual-loop model's argument: the trainer's setting is refused with the key to use instead."""
    from lightning_gm.cli import GenerativeCLI
    from lightning_gm.models import VAE

    assert VAE.manual_loop
    common = ["fit", "--model=lightning_gm.models.VAE", "--data=lightning_gm.data.DigitsDataModule",
              "--model.init_args.evaluation.test_k=2", "--trainer.max_steps=2", "--trainer.logger=false",
              "--trainer.enable_progress_bar=false", "--test_after_fit=false", "--trainer.limit_val_batches=0"]
    assert run_cli(*common, "--trainer.accumulate_grad_batches=2") != 0
    err = capsys.readouterr().err
    assert "trainer.accumulate_grad_batches=2" in err and "manual optimisation" in err
    assert run_cli(*common, "--trainer.gradient_clip_val=0.25") != 0
    err = capsys.readouterr().err
    assert "trainer.gradient_clip_val=0.25" in err and "model.init_args.gradient_clip_val" in err
    assert run_cli(*common, "--model.init_args.gradient_clip_val=0.25",
                   "--model.init_args.gradient_clip_algorithm=value") == 0
    cli = GenerativeCLI(args=common[1:] + ["--model.init_args.gradient_clip_val=0.25"], run=False)
    assert cli.model.gradient_clip_val == 0.25 and cli.model.gradient_clip_algorithm == "norm"
    assert cli.trainer.gradient_clip_val is None


def _rbm_fit(load_batch: int, update_batch_size: int | None, persistent: bool) -> torch.Tensor:
    from lightning_gm.models import RBM

    pl.seed_everything(3, verbose=False)
    x = (torch.rand(64, 12, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    model = RBM(data_shape=(12,), n_hidden=5, cd=CD(persistent=persistent, chains=8, k=2), weight_std=0.1,
                init_visible_bias=False, penalties=Penalties(sparsity_cost=0.1), momentum=MomentumWarmup(epochs=0), update_batch_size=update_batch_size,
                optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5))
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, DataLoader(TensorDataset(x, torch.zeros(64)), batch_size=load_batch, shuffle=False))
    assert trainer.global_step == 2 * 64 // (update_batch_size or load_batch)  # one step per update
    return torch.cat([p.detach().flatten() for p in model.rbm.parameters()])


@pytest.mark.parametrize("persistent", [False, True])
def test_update_batch_size_makes_the_same_updates_as_loading_them_one_by_one(persistent: bool) -> None:
    one_by_one = _rbm_fit(8, None, persistent)
    split = _rbm_fit(32, 8, persistent)
    torch.testing.assert_close(split, one_by_one)
    assert not torch.allclose(_rbm_fit(32, None, persistent)[:10], one_by_one[:10])  # batch 32 is another run


def test_manual_loop_arguments_are_validated() -> None:
    from lightning_gm.models import RBM

    with pytest.raises(ConfigError, match="model.init_args.update_batch_size must be >= 1"):
        RBM(data_shape=(4,), n_hidden=2, update_batch_size=0)
    with pytest.raises(ConfigError, match="model.init_args.gradient_clip_val must be >= 0"):
        RBM(data_shape=(4,), n_hidden=2, gradient_clip_val=-1.0)
    with pytest.raises(ConfigError, match="model.init_args.gradient_clip_algorithm must be 'norm' or 'value'"):
        RBM(data_shape=(4,), n_hidden=2, gradient_clip_algorithm="max")


def _vae_fit(load_batch: int, update_batch_size: int | None) -> tuple[torch.Tensor, list[float]]:
    from lightning_gm.models import VAE
    from lightning_gm.models.vae import Objective

    pl.seed_everything(5, verbose=False)
    x = (torch.rand(64, 12, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    model = VAE(data_shape=(12,), latent_dim=2, hidden=[8], objective=Objective(kl_warmup_epochs=2),
                update_batch_size=update_batch_size, optimizer=lambda p: torch.optim.Adam(p, lr=0.01))
    weights: list[float] = []

    class KL(pl.Callback):
        def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: Any, optimizer: Any) -> None:
            weights.append(pl_module.kl_weight())

    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[KL()],
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, DataLoader(TensorDataset(x, torch.zeros(64)), batch_size=load_batch, shuffle=False))
    return torch.cat([p.detach().flatten() for p in model.parameters()]), weights


def test_vae_update_batch_size_keeps_the_updates_and_the_kl_warmup() -> None:
    params, kl = _vae_fit(8, None)
    params_split, kl_split = _vae_fit(32, 8)
    assert kl == pytest.approx([min(1.0, s / 16) for s in range(16)])  # 8 updates per epoch, 2 warm-up epochs
    assert kl_split == pytest.approx(kl)
    torch.testing.assert_close(params_split, params)


# --- one forward pass per test batch ----------------------------------------------------------------
def _one_pass_cases() -> dict[str, Any]:
    from functools import partial

    from lightning_gm.models import NADE, PPCA, Flow, MADEDensity
    from lightning_gm.nn.flows import MAF

    D = 6

    def flow() -> Any:
        return Flow(data_shape=(D,), flow=partial(MAF, num_layers=2, hidden_features=(16,)))

    def ppca() -> Any:
        model = PPCA((D,), latent_dim=2)
        model.fit_data(torch.randn(200, D, generator=torch.Generator().manual_seed(3)).split(100))
        return model

    # (model factory, binary data?, the module whose call is one evaluation, evaluations per batch one pass / two)
    return {
        "flow": (flow, False, "flow", 1, 2),
        "nade": (lambda: NADE((D,), hidden=8), True, "logits", 1, 2),
        # the loss is the val_num_masks=2 mixture, log p(x) the test_num_masks=3 mixture: 3 passes, not 2 + 3
        "made": (lambda: MADEDensity((D,), hidden=(8,), ordering="random", hidden_degrees="random", num_masks=4,
                                     val_num_masks=2, test_num_masks=3), True, "made", 3, 5),
        "ppca": (ppca, False, "log_marginal", 1, 2),
    }


@pytest.mark.parametrize("name", ["flow", "nade", "made", "ppca"])
def test_exact_families_evaluate_once_per_test_batch_with_unchanged_numbers(name: str):
    """Flows, autoregressive and linear-Gaussian models read the test loss and log p(x) from one evaluation
    (``test_terms``): the evaluations per batch drop from two to one, and the logged test/nll, test/loss and
    test/nll_stderr equal those of the base's two-evaluation default."""
    factory, binary, evaluated, one, two = _one_pass_cases()[name]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, 6, generator=g)
    x = torch.bernoulli(x, generator=g) if binary else x
    loader = DataLoader(TensorDataset(x, torch.zeros(60)), batch_size=20)

    def test(model: GenerativeModel) -> tuple[dict[str, float], int]:
        calls = [0]
        target = getattr(model, evaluated)
        if isinstance(target, torch.nn.Module):
            target.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
        else:
            def counted(*a: Any, **k: Any) -> Any:
                calls[0] += 1
                return target(*a, **k)
            setattr(model, evaluated, counted)
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)
        out = trainer.test(model, dataloaders=loader, verbose=False)[0]
        return out, calls[0]

    torch.manual_seed(0)
    model = factory()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    new, new_calls = test(model)
    model.load_state_dict(state)
    model.test_terms = lambda x: GenerativeModel.test_terms(model, x)  # the base's default: loss_terms + log_prob
    old, old_calls = test(model)
    assert (new_calls, old_calls) == (3 * one, 3 * two)
    assert set(new) == set(old) and {"test/nll", "test/loss", "test/nll_stderr"} <= set(new)
    for key in old:
        assert new[key] == pytest.approx(old[key], rel=1e-6, abs=1e-6), key


@pytest.mark.parametrize("cls", [_Quadratic, _QuadraticManual], ids=["automatic", "manual"])
def test_a_plateau_scheduler_watches_the_monitor_in_both_loops_without_warnings(cls: type, tmp_path: Path) -> None:
    """ReduceLROnPlateau steps on the model's monitor (``val/loss``) in both loops, and the manual loop's scheduler
    dict carries no ``monitor`` key for Lightning to warn about ("... keys will be ignored")."""
    import warnings

    plateau = lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0)  # noqa: E731
    model = cls(lr_scheduler=plateau)
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, _loader(), _loader())
    assert not [w for w in caught if "lr scheduler dict contains" in str(w.message)]
    # val/loss falls every epoch, which mode="max" reads as no improvement: the rate halves after epochs 2 and 3
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 2)
