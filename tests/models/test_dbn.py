"""The DBN: its variational bound against exact log-likelihoods by enumeration, and the greedy phases
(the layer trained follows the epoch, also after resuming from a checkpoint)."""

from __future__ import annotations

import csv
import itertools

import pytest
import torch

from lightning_gm.estimators.partition import enumerate_binary, log_partition_enumerate
from lightning_gm.models import DBN


def _random_dbn(d: int, hidden: list[int], seed: int) -> DBN:
    torch.manual_seed(seed)
    m = DBN(data_shape=(d,), hidden=hidden, epochs_per_layer=[1] * len(hidden), weight_std=1.0).double()
    with torch.no_grad():
        for rbm in m.rbms:
            rbm.b.normal_()
            rbm.c.normal_()
    return m


def _exact_log_p(m: DBN, v: torch.Tensor) -> torch.Tensor:
    """log p(v) = log sum_{h_1..h_{L-1}} p(v|h_1) ... p(h_{L-2}|h_{L-1}) p_top(h_{L-1}), all enumerated."""
    log_z = log_partition_enumerate(m.rbms[-1])
    configs = [enumerate_binary(n) for n in m.sizes[1:-1]]
    terms = []
    for hs in itertools.product(*[range(len(c)) for c in configs]):
        h = [configs[l][i] for l, i in enumerate(hs)]
        below = [v, *h]
        t = -m.rbms[-1].free_energy(below[-1]) - log_z
        for l in range(len(h)):
            logits = m.rbms[l].visible_logits(below[l + 1])
            t = t + (below[l] * logits - torch.nn.functional.softplus(logits)).sum(-1)
        terms.append(t.expand(v.shape[0]))
    return torch.logsumexp(torch.stack(terms), 0)


@pytest.mark.parametrize("hidden", [[3, 4], [3, 2, 3], [2, 3, 2, 2]])
@pytest.mark.parametrize("seed", [0, 1])
def test_bound_is_below_and_importance_identity_is_exact(hidden: list[int], seed: int) -> None:
    m = _random_dbn(5, hidden, seed)
    v = enumerate_binary(5)
    exact = _exact_log_p(m, v)
    assert float(torch.logsumexp(exact, 0)) == pytest.approx(0.0, abs=1e-9)  # a distribution over {0,1}^5
    log_z = m.ensure_log_partition().log_z
    assert m.ensure_log_partition().estimator == "exact" and m.estimator == "bound"
    # enumerate every posterior configuration h_1..h_{L-1}, with its probability under q(.|v)
    configs = [enumerate_binary(n, torch.float64) for n in m.sizes[1:-1]]
    hs = [torch.cartesian_prod(*[torch.arange(len(c)) for c in configs]).reshape(-1, len(configs))[:, l] for l in range(len(configs))]
    samples = [configs[l][hs[l]].unsqueeze(1).expand(-1, v.shape[0], -1) for l in range(len(configs))]
    lw = m.log_weights(v, samples) - log_z  # (#configs, 32)
    below = [v.unsqueeze(0), *samples]
    log_q = sum(
        (below[l + 1] * m.rbms[l].hidden_logits(below[l]) - torch.nn.functional.softplus(m.rbms[l].hidden_logits(below[l]))).sum(-1)
        for l in range(len(samples))
    )
    torch.testing.assert_close(torch.logsumexp(log_q, 0), torch.zeros(32, dtype=torch.float64), atol=1e-9, rtol=0)
    # E_q[w] = p(v) exactly, and E_q[log w] <= log p(v) (strictly: q is not the true posterior)
    torch.testing.assert_close(torch.logsumexp(log_q + lw, 0), exact, atol=1e-9, rtol=0)
    bound = (log_q.exp() * lw).sum(0)
    assert torch.all(bound <= exact + 1e-12) and float((exact - bound).mean()) > 1e-3
    # the model's Monte Carlo estimate (importance-weighted, S samples) lies between the two on average
    # (to within 4 standard errors of the mean over 100 repetitions)
    m.bound_samples = 20
    torch.manual_seed(seed)
    reps = torch.stack([m.log_prob(v) for _ in range(100)]).detach()
    est, se = reps.mean(0), reps.std(0) / 10
    assert torch.all(est <= exact + 4 * se + 1e-9) and torch.all(est >= bound - 4 * se - 1e-9)
    assert float((est - bound).mean()) > 0  # S = 20 importance samples tighten the plain bound


def test_phase_follows_the_epoch() -> None:
    m = DBN(data_shape=(4,), hidden=[3, 3, 2], epochs_per_layer=[2, 1, 3])
    assert [m.layer_at(e) for e in range(8)] == [0, 0, 1, 2, 2, 2, 2, 2]
    assert [m.phase_start(l) for l in range(3)] == [0, 2, 3]


def _cli(*args: str) -> int:
    from lightning_gm.cli import main

    try:
        return main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)


def _layers(run) -> list[tuple[int, float]]:
    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("train/layer_epoch")]
    return [(int(r["epoch"]), float(r["train/layer_epoch"])) for r in rows]


def test_phases_resume_from_a_checkpoint_in_the_right_layer(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    common = ["--model=lightning_gm.models.DBN", "--model.init_args.hidden=[16, 6]", "--model.init_args.epochs_per_layer=[2, 2]",
              "--model.init_args.sample_steps=5", "--data=lightning_gm.data.DigitsDataModule", "--data.init_args.binarize=static",
              "--data.init_args.batch_size=100", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
              "--experiment=dbn", "--run_name=r", "--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.init_args.save_dir=runs"]
    assert _cli("fit", *common, "--trainer.max_epochs=2", "--test_after_fit=false") == 0
    run = tmp_path / "runs/dbn/r"
    assert _layers(run) == [(0, 0.0), (1, 0.0)]
    after_layer0 = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert _cli("fit", "--config", str(run / "config.yaml"), "--trainer.max_epochs=4", "--ckpt_path=last",
                "--model.init_args.bound_samples=2", "--test_after_fit=true") == 0
    final = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    for key in ("rbms.0.W", "rbms.0.b", "rbms.0.c"):  # layer 0 frozen in layer 1's phase
        torch.testing.assert_close(final[key], after_layer0[key], rtol=0, atol=0)
    assert not torch.equal(final["rbms.1.W"], after_layer0["rbms.1.W"])  # layer 1 trained after the resume
    # layer 1's visible biases were initialised at its phase start from its input's log-odds
    assert not torch.equal(final["base_log_odds_1"], after_layer0["base_log_odds_1"])
    assert _layers(run)[-2:] == [(2, 1.0), (3, 1.0)]  # (the CSV logger restarts its file on resume)
    import json

    summary = json.loads((run / "summary.json").read_text())
    assert summary["estimator"] == "bound" and summary["family"] == "dbn" and summary["status"] == "tested"
    assert 15 < summary["test"]["test/nll"] < 45  # nats on 8x8 binary digits (64 bits at most)
