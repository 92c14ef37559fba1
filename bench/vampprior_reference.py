"""A plain PyTorch transcription of Tomczak & Welling's VampPrior VAE (github.com/jmtomczak/vae_vampprior,
models/VAE.py, utils/nn.py, utils/optimizer.py, utils/training.py), to check the platform's
``conf/vae_vampprior.yaml`` against the authors' recipe at an equal number of epochs.

What it transcribes: GatedDense 784-300-300 encoder and 40-300-300-784 decoder (separate ``h`` and ``g`` linear
maps), ``q_z_logvar`` through Hardtanh(-6, 2), sigmoid Bernoulli means clamped to [1e-5, 1 - 1e-5], He-normal
weights (biases keep PyTorch's default), 500 pseudo-inputs ``Hardtanh(0, 1)(W)`` with ``W ~ N(0.05, 0.01)``, the
one-sample ELBO with ``beta = epoch / warmup`` (epochs counted from 1), AdamNormGrad (each parameter's gradient
divided by its L2 norm before Adam) with lr 5e-4, batches of 100 of dynamically binarised MNIST (50,000 training
images). ``--prior standard`` is the paper's standard-normal comparison.

The score is the platform's seeded importance-weighted bound (``lightning_gm.estimators.seeded``) with the same
``k`` on the same evenly spaced test images as ``bench/vae_equal_budget.py``.

    python bench/vampprior_reference.py --epochs 5 --prior vampprior
    python bench/vampprior_reference.py --epochs 5 --prior standard
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import Tensor, nn

__all__ = ["GatedDense", "ReferenceVAE", "AdamNormGrad", "train", "main"]


class GatedDense(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.h, self.g = nn.Linear(n_in, n_out), nn.Linear(n_in, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


def _log_normal_diag(x: Tensor, mean: Tensor, log_var: Tensor, dim: int) -> Tensor:
    # the authors' log_Normal_diag, with the constant they drop (it cancels in their KL, not in log p(x, z))
    return (-0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 / torch.exp(log_var))).sum(dim)


class ReferenceVAE(nn.Module):
    """The authors' one-layer VAE with the standard or the VampPrior prior."""

    def __init__(self, prior: str = "vampprior", components: int = 500, latent: int = 40) -> None:
        super().__init__()
        self.prior, self.components, self.latent = prior, components, latent
        self.q_z_layers = nn.Sequential(GatedDense(784, 300), GatedDense(300, 300))
        self.q_z_mean = nn.Linear(300, latent)
        self.q_z_logvar = nn.Linear(300, latent)
        self.p_x_layers = nn.Sequential(GatedDense(latent, 300), GatedDense(300, 300))
        self.p_x_mean = nn.Linear(300, 784)
        for m in self.modules():
            if isinstance(m, nn.Linear):  # he_init: weights only
                m.weight.data.normal_(0, math.sqrt(2.0 / m.in_features))
        if prior == "vampprior":
            self.means = nn.Linear(components, 784, bias=False)
            self.means.weight.data.normal_(0.05, 0.01)
            self.register_buffer("idle_input", torch.eye(components))

    def q_z(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.q_z_layers(x)
        return self.q_z_mean(h), nn.functional.hardtanh(self.q_z_logvar(h), -6.0, 2.0)

    def p_x(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.p_x_mean(self.p_x_layers(z))).clamp(1e-5, 1 - 1e-5)

    def log_p_z(self, z: Tensor) -> Tensor:
        if self.prior == "standard":
            return (-0.5 * (math.log(2 * math.pi) + z**2)).sum(-1)
        x = nn.functional.hardtanh(self.means(self.idle_input), 0.0, 1.0)
        mu, lv = self.q_z(x)  # (C, L)
        a = _log_normal_diag(z.unsqueeze(-2), mu, lv, dim=-1) - math.log(self.components)  # (..., C)
        return torch.logsumexp(a, dim=-1)

    def log_weights(self, x: Tensor, n: int, generators=None) -> Tensor:
        """``log p(x, z) - log q(z | x)`` for ``n`` samples per example, ``(n, B)`` (platform signature)."""
        from lightning_gm.models.vae import standard_normal_noise

        mu, lv = self.q_z(x)
        z = mu + torch.exp(0.5 * lv) * standard_normal_noise(n, x, self.latent, generators)
        p = self.p_x(z)
        log_px = (x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(-1)
        return log_px + self.log_p_z(z) - _log_normal_diag(z, mu, lv, dim=-1)

    def loss(self, x: Tensor, beta: float) -> Tensor:
        mu, lv = self.q_z(x)
        z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
        p = self.p_x(z)
        re = (x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(-1)
        kl = -(self.log_p_z(z) - _log_normal_diag(z, mu, lv, dim=-1))
        return (-re + beta * kl).mean()


class AdamNormGrad(torch.optim.Adam):
    """The authors' optimiser: Adam on each parameter's gradient divided by its L2 norm (+ 1e-7)."""

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(p.grad.norm(2) + 1e-7)
        return super().step(closure)


def train(model: ReferenceVAE, x_train: Tensor, epochs: int, warmup: int, lr: float, optimizer: str,
          batch: int = 100, seed: int = 14) -> list[float]:
    torch.manual_seed(seed)
    opt = (AdamNormGrad if optimizer == "adamnormgrad" else torch.optim.Adam)(model.parameters(), lr=lr)
    losses = []
    for epoch in range(1, epochs + 1):
        beta = 1.0 if warmup == 0 else min(1.0, epoch / warmup)
        perm = torch.randperm(len(x_train))
        total = 0.0
        for i in range(0, len(x_train), batch):
            xb = torch.bernoulli(x_train[perm[i : i + batch]])
            loss = model.loss(xb, beta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(xb)
        losses.append(total / len(x_train))
        print(f"epoch {epoch}: beta {beta:.2f}, train loss {losses[-1]:.2f}", flush=True)
    return losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--prior", choices=["vampprior", "standard"], default="vampprior")
    p.add_argument("--optimizer", choices=["adamnormgrad", "adam"], default="adamnormgrad")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--every", type=int, default=10, help="test images 0, every, 2*every, ... (10: 1,000 of 10,000)")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--save", default=None, help="save the trained state dict here")
    args = p.parse_args()

    from lightning_gm.data import MNISTDataModule
    from lightning_gm.estimators.seeded import seeded_importance_weighted

    dm = MNISTDataModule(binarize="dynamic", val_size=10000)
    dm.setup()
    x_train = dm.splits["train"][0].float().flatten(1) / 255.0
    x_test = dm.splits["test"][0].float().flatten(1)
    model = ReferenceVAE(args.prior)
    start = time.time()
    train(model, x_train, args.epochs, args.warmup, args.lr, args.optimizer, seed=args.seed)
    fit = time.time() - start
    if args.save:
        torch.save(model.state_dict(), args.save)
    model.eval()
    idx = torch.arange(0, len(x_test), args.every)
    with torch.no_grad():
        est = seeded_importance_weighted(model.log_weights, x_test[idx], idx.tolist(), args.k, seed=0)
    lp = est.log_prob.double()
    print(f"reference {args.prior} ({args.optimizer}, warm-up {args.warmup}, {args.epochs} epochs, fit {fit:.0f}s): "
          f"iwae-{args.k} NLL {-lp.mean():.2f} +- {lp.std() / math.sqrt(len(lp)):.2f} on {len(lp)} test images "
          f"({len(lp)} of {len(x_test)}, every {args.every}th)")


if __name__ == "__main__":
    main()
