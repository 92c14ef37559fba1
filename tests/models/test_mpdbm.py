"""The MP-DBM LightningModule: configuration errors name the key, planted weights classify correctly,
inpainting keeps the observed pixels, the training step reaches every parameter, evaluation masks are
fixed, the unlabelled model's test bound is below the exact log-likelihood, and a short ``fit`` on the
digits reports accuracy and inpainting next to a standard DBM on the same masks."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_gm.errors import ConfigError
from lightning_gm.models import MPDBM


@pytest.mark.parametrize(
    "kwargs, key",
    [({"hidden": []}, "hidden"), ({"n_classes": 1}, "n_classes"), ({"mf_steps": 0}, "mf_steps"),
     ({"mask_prob": 1.0}, "mask_prob"), ({"classify_prob": 0.5}, "n_classes"),
     ({"n_classes": 10, "test_loglik": True}, "test_loglik")],
)
def test_bad_configs_name_the_key(kwargs, key) -> None:
    with pytest.raises(ConfigError, match=key):
        MPDBM(data_shape=(4,), **kwargs)


def planted(hidden_layers: int, multi_inference: bool) -> MPDBM:
    """12 pixels in 3 blocks of 4; class k <-> block k on <-> hidden unit k on (in every layer) <-> label k."""
    m = MPDBM(data_shape=(12,), hidden=[3] * hidden_layers, n_classes=3, multi_inference=multi_inference,
              centered=False).double()
    block = torch.zeros(12, 3, dtype=torch.float64)
    for k in range(3):
        block[4 * k : 4 * k + 4, k] = 1.0
    with torch.no_grad():
        m.dbm.W(1).copy_(4.0 * (2 * block - 1))  # +4 from own block, -4 from others
        m.dbm.biases[0].fill_(-2.0)
        for l in range(2, hidden_layers + 1):
            m.dbm.W(l).copy_(6.0 * torch.eye(3) - 3.0)
        m.label_weights.copy_(6.0 * torch.eye(3) - 3.0)  # type: ignore[union-attr]
    return m


@pytest.mark.parametrize("multi_inference", [False, True])
@pytest.mark.parametrize("hidden_layers", [1, 2, 3])
def test_planted_weights_classify_correctly(hidden_layers, multi_inference) -> None:
    m = planted(hidden_layers, multi_inference)
    proto = torch.zeros(3, 12, dtype=torch.float64)
    for k in range(3):
        proto[k, 4 * k : 4 * k + 4] = 1.0
    noisy = proto.clone()
    noisy[torch.arange(3), torch.tensor([0, 5, 10])] = 0.0  # one pixel of the block off
    noisy[torch.arange(3), torch.tensor([11, 0, 4])] = 1.0  # one pixel of another block on
    x = torch.cat([proto, noisy])
    probs = m.classify(x)
    assert probs.argmax(-1).tolist() == [0, 1, 2, 0, 1, 2]
    torch.testing.assert_close(probs.sum(-1), torch.ones(6, dtype=torch.float64))
    # inpainting a missing block from the label-free evidence: the rest of the block comes back on
    missing = torch.zeros_like(proto)
    missing[:, [1, 2, 5, 6, 9, 10]] = 1.0
    filled = m.inpaint(proto, missing)
    assert torch.equal(filled[missing == 0], proto[missing == 0])
    assert torch.equal((filled > 0.5).double(), proto)


def _batch(n: int = 12, d: int = 16, classes: int = 4):
    g = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.full((n, d), 0.4), generator=g), torch.randint(classes, (n,), generator=g)


@pytest.mark.parametrize("n_classes", [0, 4])
def test_training_step_reaches_every_parameter(n_classes) -> None:
    torch.manual_seed(0)
    m = MPDBM(data_shape=(16,), hidden=[8, 6], n_classes=n_classes, mf_steps=3, weight_cost=1e-3, weight_std=0.3)
    x, y = _batch()
    m._y = y
    terms = m.loss_terms(x, "train")
    terms["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    assert ("label_xent" in terms) == bool(n_classes)


def test_evaluation_masks_are_the_same_every_epoch() -> None:
    torch.manual_seed(0)
    m = MPDBM(data_shape=(16,), hidden=[8], n_classes=4, mf_steps=3, weight_std=0.3)
    x, y = _batch()
    m._y = y
    m.on_validation_epoch_start()
    first = m.loss_terms(x, "val")
    m.on_validation_epoch_start()
    second = m.loss_terms(x, "val")
    assert float(first["loss"]) == float(second["loss"]) and "accuracy" in first
    assert float(m.loss_terms(x, "train")["loss"]) != float(first["loss"])  # training masks are fresh


def test_unlabelled_bound_is_below_the_exact_log_likelihood() -> None:
    from tests.nn.test_dbm import brute_log_p

    torch.manual_seed(2)
    m = MPDBM(data_shape=(5,), hidden=[4, 3], weight_std=1.0, test_loglik=True).double()
    assert m.estimator == "exact+meanfield"
    v = torch.bernoulli(torch.full((16, 5), 0.5, dtype=torch.float64))
    bound, exact = m.log_prob(v), brute_log_p(m.dbm, v)
    assert torch.all(bound <= exact + 1e-9) and float((exact - bound).mean()) < 2.0
    labelled = MPDBM(data_shape=(5,), hidden=[4], n_classes=3)  # no fake estimator with labels: it says so
    assert labelled.estimator == "none (accuracy)"
    with pytest.raises(ConfigError, match="n_classes"):
        labelled.log_prob(v)


def test_labels_out_of_range_are_a_config_error() -> None:
    m = MPDBM(data_shape=(16,), hidden=[8], n_classes=3)
    x, _ = _batch()
    m._y = torch.full((12,), 7)
    with pytest.raises(ConfigError, match="n_classes=3"):
        m.loss_terms(x, "train")


DIGITS = ["--data=lightning_gm.data.DigitsDataModule", "--data.init_args.binarize=static", "--data.init_args.batch_size=100",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--run_name=r",
          "--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.init_args.save_dir=runs",
          "--trainer.callbacks+=lightning_gm.callbacks.InpaintingEvaluation",
          "--trainer.callbacks.masks=[random50, bottom]", "--trainer.callbacks.num_pictures=8"]


def test_fit_reports_accuracy_and_inpainting_next_to_the_dbm(run_cli, tmp_path) -> None:
    """Short fits on the 8x8 digits: the MP-DBM (labels) and a standard DBM, same data, same masks."""
    assert run_cli("fit", "--model=lightning_gm.models.MPDBM", "--model.init_args.hidden=[32, 32]",
                   "--model.init_args.n_classes=10", "--model.init_args.mf_steps=4", "--model.init_args.sample_steps=2",
                   "--trainer.max_epochs=4", "--experiment=mpdbm", *DIGITS) == 0
    assert run_cli("fit", "--model=lightning_gm.models.DBM", "--model.init_args.hidden=[32, 32]",
                   "--model.init_args.epochs_per_layer=[1, 1]", "--model.init_args.num_chains=20",
                   "--model.init_args.sample_steps=2", "--model.init_args.mf_iterations=4", "--model.init_args.ais.exact_max_units=0",
                   "--model.init_args.ais.runs=4", "--model.init_args.ais.steps=20",
                   "--trainer.max_epochs=3", "--experiment=dbm", *DIGITS) == 0
    results = {}
    for name in ("mpdbm", "dbm"):
        run = tmp_path / "runs" / name / "r"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "tested"
        test = summary["test"]
        for kind in ("random50", "bottom"):
            assert 0.0 <= test[f"test/inpaint_err_{kind}"] <= 0.5  # no worse than a coin
            assert test[f"test/inpaint_xent_{kind}"] > 0
            assert (run / "samples" / f"inpaint_{kind}.png").is_file()
        results[name] = test
    assert 0.0 <= results["mpdbm"]["test/accuracy"] <= 1.0  # learning is slow here; correctness: planted test
    assert "test/nll" not in results["mpdbm"] and summary["estimator"] == "ais+meanfield 4x20"


@pytest.mark.parametrize("n_classes", [0, 3])
def test_gibbs_samples_have_the_enumerated_visible_marginals(n_classes) -> None:
    """The mean of the sampled p(v | h_1) over many chains is the exact marginal p(v_i = 1) (label group included)."""
    from lightning_gm.nn.mpdbm import joint_energy
    from tests.nn.test_mpdbm import configurations

    torch.manual_seed(0)
    m = MPDBM(data_shape=(4,), hidden=[3, 2], n_classes=n_classes, weight_std=1.0, centered=False).double()
    with torch.no_grad():
        for b in m.dbm.biases:
            b.normal_()
    states, label = configurations(m.sizes, n_classes)
    logp = -joint_energy(m.dbm, states, label, m.label_weights, m.label_bias).detach()
    exact = (torch.softmax(logp, 0).unsqueeze(-1) * states[0]).sum(0)
    probs = m.sample(4000, steps=30)
    assert probs.shape == (4000, 4) and torch.all((probs >= 0) & (probs <= 1))
    torch.testing.assert_close(probs.mean(0), exact, rtol=0, atol=0.03)  # 4000 chains: s.e. < 0.008
