"""VAE family on dynamically binarised MNIST: this platform's configs against pythae's VAE, IWAE and VAMP with the
same networks, same data, same budget, scored by the platform's IWAE-k on the same test images.

    pip install --no-deps pythae        # the `bench` extra of pyproject.toml (tested with pythae 0.1.2)
    python bench/peers/vae_pythae.py --model vae|iwae|vamp --budget 00:00:15:00 [--k 5000] [--examples 1000]
                                     [--out runs/peers/vae_pythae]

* **Here:** ``lightning_gm fit --config <conf/vae.yaml | conf/iwae.yaml | conf/vae_vampprior.yaml>
  --trainer.max_time=<budget>``; the checkpoint the platform selects (best validation bound).
* **Peer:** ``pythae.models.VAE`` (``IWAE`` with ``number_samples`` = the config's ``objective.train_k``; ``VAMP`` with
  ``number_components`` and ``linear_scheduling_steps`` = the config's VampPrior components and
  ``objective.kl_warmup_epochs``; a warm-up given as a fraction of the run has no pythae counterpart: 0, said),
  ``reconstruction_loss="bce"``, whose encoder and decoder are the *platform's own networks* built from the same
  config with the same seed (pythae wraps them: the encoder's output split into mean and log-variance, the decoder's
  logits through a sigmoid), so both sides start from identical weights. Trained by pythae's ``BaseTrainer`` with the
  config's optimiser settings and batch size, on the same 50,000 training images binarised afresh at every access
  (a ``pythae`` dataset whose items are Bernoulli draws of the grey levels, as the platform's dynamic binarisation),
  validated on the platform's fixed binarisation of the same 10,000 validation images, keeping pythae's best model;
  a training callback ends it at the first epoch end from which another half epoch would overrun the budget.
* Both trainings run at the same time, one thread each.
* **Score:** both trained networks in the platform's model class (the peer's weights copied in; for VAMP the
  pseudo-inputs ``hardtanh(W + b)`` as the VampPrior's with ``bounds: [0, 1]``), the platform's importance-weighted
  bound ``iw_log_prob`` with ``--k`` samples on ``--examples`` evenly spaced test images of the platform's seeded
  binarisation, per example; the paired difference and its standard error.

Written against the VAE API of this commit (``VAE.encoder``, ``VAE.decoder``, ``VAE.iw_log_prob``, ``VampPrior``);
another change to the VAE networks may need these names updated.

References: Chadebec et al., "Pythae: Unifying Generative Autoencoders in Python", NeurIPS 2022 (Datasets and
Benchmarks); Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016; Tomczak & Welling,
"VAE with a VampPrior", AISTATS 2018.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from torch import nn

import common


CONFIGS = {"vae": "conf/vae.yaml", "iwae": "conf/iwae.yaml", "vamp": "conf/vae_vampprior.yaml"}


def _cli(config: str, extra: tuple[str, ...] = ()):
    from lightning_gm.cli import GenerativeCLI

    return GenerativeCLI(args=["--config", str(common.ROOT / config), "--trainer.logger=false", *extra], run=False)


def _vamp_bounds(model_name: str) -> tuple[str, ...]:
    return ("--model.init_args.prior.init_args.bounds=[0.0, 1.0]",) if model_name == "vamp" else ()


def _pythae_model(model_name: str, platform_model, train_k: int, warmup_epochs: int):
    """The pythae model around copies of the platform model's encoder and decoder."""
    from pythae.models import IWAE, VAE, VAMP, IWAEConfig, VAEConfig, VAMPConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    latent = platform_model.latent_dim

    class Encoder(BaseEncoder):
        def __init__(self, net: nn.Module) -> None:
            BaseEncoder.__init__(self)
            self.net = net

        def forward(self, x: torch.Tensor):
            out = self.net(x.reshape(x.shape[0], -1))
            return ModelOutput(embedding=out[:, :latent], log_covariance=out[:, latent:2 * latent])

    class Decoder(BaseDecoder):
        def __init__(self, net: nn.Module) -> None:
            BaseDecoder.__init__(self)
            self.net = net

        def forward(self, z: torch.Tensor):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    enc, dec = Encoder(copy.deepcopy(platform_model.encoder)), Decoder(copy.deepcopy(platform_model.decoder))
    common = dict(input_dim=(784,), latent_dim=latent, reconstruction_loss="bce")
    if model_name == "vae":
        return VAE(VAEConfig(**common), encoder=enc, decoder=dec)
    if model_name == "iwae":
        return IWAE(IWAEConfig(**common, number_samples=train_k), encoder=enc, decoder=dec)
    prior = platform_model.prior
    return VAMP(VAMPConfig(**common, number_components=prior.num_components, linear_scheduling_steps=warmup_epochs),
                encoder=enc, decoder=dec)


def _datasets():
    """pythae datasets: training images binarised afresh at every access; the platform's fixed validation set."""
    from pythae.data.datasets import BaseDataset, DatasetOutput

    from lightning_gm.data import MNISTDataModule

    dm = MNISTDataModule(binarize="dynamic", batch_size=100, eval_batch_size=500, val_size=10000, download=False)
    dm.setup()
    grey = dm.splits["train"][0].float().reshape(-1, 784) / 255.0

    class DynamicBinarized(BaseDataset):
        def __getitem__(self, index):
            return DatasetOutput(data=torch.bernoulli(self.data[index]))

    val = dm.splits["val"][0].reshape(-1, 784).float()
    return DynamicBinarized(grey, torch.zeros(len(grey))), BaseDataset(val, torch.zeros(len(val))), dm


def _trainer_config(cli, epochs: int, out: Path):
    from pythae.trainers import BaseTrainerConfig

    opt = cli.config["model"]["init_args"]["optimizer"]
    params = {k: v for k, v in dict(opt.get("init_args") or {}).items() if k != "lr"}
    update = cli.model.update_batch_size or cli.datamodule.batch_size
    return BaseTrainerConfig(output_dir=str(out), per_device_train_batch_size=int(update),
                             per_device_eval_batch_size=500, num_epochs=epochs,
                             optimizer_cls=str(opt["class_path"]).rsplit(".", 1)[-1], optimizer_params=params or None,
                             learning_rate=float(opt["init_args"]["lr"]), no_cuda=True, seed=0)


def train_peer(model_name: str, budget_s: float, out: Path) -> None:
    """pythae's training of the same networks for ``budget_s`` seconds (run in its own process by ``main``).

    pythae's trainer runs a fixed number of epochs; a training callback ends it at the first epoch end from which
    another half epoch would overrun the budget (Lightning's ``max_time`` stops mid-epoch and validates there),
    and pythae's best model on the validation set so far is kept."""
    from pythae.trainers import BaseTrainer
    from pythae.trainers.training_callbacks import TrainingCallback

    class BudgetSpent(Exception):
        pass

    class Budget(TrainingCallback):
        def __init__(self) -> None:
            self.epoch_start, self.epochs = time.time(), 0

        def on_epoch_begin(self, training_config, **kwargs) -> None:
            self.epoch_start = time.time()

        def on_epoch_end(self, training_config, **kwargs) -> None:
            self.epochs += 1
            if time.time() - start + 0.5 * (time.time() - self.epoch_start) > budget_s:
                raise BudgetSpent

    torch.set_num_threads(1)
    start = time.time()
    torch.manual_seed(0)
    cli = _cli(CONFIGS[model_name], _vamp_bounds(model_name))
    train, val, _ = _datasets()
    objective = cli.model.objective  # the config's parameter group (train_k, KL warm-up)
    if objective.kl_warmup_fraction > 0:  # pythae counts its linear warm-up in epochs: print what it cannot follow
        print(f"peer: pythae's warm-up is in epochs; the config's warm-up over {objective.kl_warmup_fraction:.0%} of "
              "the run is given as 0 epochs (the budget holds only a few epochs)", file=sys.stderr)
    model = _pythae_model(model_name, cli.model, objective.train_k, objective.kl_warmup_epochs)
    budget = Budget()
    trainer = BaseTrainer(model, train, val, _trainer_config(cli, 100000, out / "pythae"), callbacks=[budget])
    try:
        trainer.train()
    except BudgetSpent:
        pass
    best = trainer._best_model
    torch.save({"encoder": best.encoder.net.state_dict(), "decoder": best.decoder.net.state_dict(),
                "pseudo_inputs": (best.pseudo_inputs[0].weight.T + best.pseudo_inputs[0].bias).detach()
                if model_name == "vamp" else None,
                "epochs": budget.epochs, "total_s": time.time() - start}, out / "peer.pt")
    print(f"epochs {budget.epochs}, total {time.time() - start:.0f} s")


def main() -> None:
    parser = common.parser(__doc__, examples=1000)
    parser.add_argument("--model", choices=sorted(CONFIGS), default="vae")
    parser.add_argument("--k", type=int, default=5000, help="importance samples of the test bound")
    args = parser.parse_args()
    out = Path(args.out or common.ROOT / "runs" / "peers" / "vae_pythae" / args.model)
    budget, config = common.seconds(args.budget), CONFIGS[args.model]
    if args.peer_only:
        train_peer(args.model, budget, out / "peer")
        return
    sides = {}
    if not args.score_only:
        sides = common.train_both(__file__, config, budget, out, ["--test_after_fit=false"], [f"--model={args.model}"])
    here = common.load_here(out, config)
    _, _, dm = _datasets()
    x_test = dm.splits["test"][0].reshape(-1, 784).float()
    x = x_test[common.evenly_spaced(len(x_test), args.examples)]
    state = torch.load(out / "peer" / "peer.pt")
    peer = _cli(config, _vamp_bounds(args.model)).model.eval()
    peer.encoder.load_state_dict(state["encoder"])
    peer.decoder.load_state_dict(state["decoder"])
    if state["pseudo_inputs"] is not None:
        with torch.no_grad():
            peer.prior.pseudo_inputs.copy_(state["pseudo_inputs"])
    with torch.no_grad():
        torch.manual_seed(1)
        nll_here = -torch.cat([here.iw_log_prob(c, args.k) for c in x.split(10)])
        torch.manual_seed(1)
        nll_peer = -torch.cat([peer.iw_log_prob(c, args.k) for c in x.split(10)])
    stats = common.paired(nll_here, nll_peer)
    estimator = f"iwae-{args.k} on {stats['n']:,} evenly spaced test images"
    result = common.record(f"VAE family ({args.model}), binarised MNIST", f"pythae 0.1.2 {args.model.upper()}", budget,
                           estimator, stats, sides, config=config, peer_epochs=state["epochs"],
                           peer_total_s=state["total_s"])
    common.write_result(out, result, f"VAE family: {args.model} ({config})",
                        f"pythae {args.model.upper()} (same networks)", f"{stats['nll_here']:.2f}",
                        f"{stats['nll_peer']:.2f}", estimator)

if __name__ == "__main__":
    main()
