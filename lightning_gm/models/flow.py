r"""Normalizing flows (the ``flow`` family): exact maximum likelihood by the change of variables.

A flow is an invertible map :math:`f` from data to noise with a standard normal base density,

.. math::

    \log p(x) = \log \mathcal N(f(x); 0, I) + \log\left|\det \frac{\partial f(x)}{\partial x}\right|,
    \qquad \mathcal L = -\frac1B \sum_b \log p(x_b),

trained on the exact negative log-likelihood and evaluated exactly (estimator ``exact``). Samples
are :math:`x = f^{-1}(z)`, :math:`z \sim \mathcal N(0, T^2 I)` at temperature :math:`T` (Kingma &
Dhariwal 2018 sample at :math:`T < 1` for smoother images).

The architecture :math:`f` is injected from the config as a factory ``shape -> FlowLayer`` (any
class of :mod:`lightning_gm.nn.flows.architectures`, e.g. ``RealNVP``, ``MAF``, ``Glow``). On
dequantised images in :math:`[0,1]^D` set ``logit_alpha``: the logit transform
:math:`y = \operatorname{logit}(\alpha + (1-2\alpha)x)` becomes the first layer and its log-det is
part of :math:`\log p(x)`, so ``log_prob`` is the density of the dequantised data itself and the
bits/dim the base class reports,

.. math::

    \text{bpd} = \frac{-\log p(x) + D \ln 256}{D \ln 2},

is the figure papers report (RealNVP, MAF, Glow).

References:
    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
    Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
    Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
    Theis, van den Oord & Bethge, "A note on the evaluation of generative models", ICLR 2016 (dequantisation).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Literal, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_gm.errors import ConfigError
from lightning_gm.models.base import GenerativeModel
from lightning_gm.nn.flows import (
    ActNorm,
    BatchNormFlow,
    FlowLayer,
    FlowSequence,
    LogitTransform,
    RealNVP,
    set_batch_norm_statistics,
)

__all__ = ["Flow", "FlowFactory", "standard_normal_log_prob"]

#: builds the flow from the data's event shape (a ``class_path`` in the config; ``shape`` is supplied)
FlowFactory = Callable[[Sequence[int]], FlowLayer]


def standard_normal_log_prob(z: Tensor) -> Tensor:
    r""":math:`\log \mathcal N(z; 0, I) = -\tfrac12 \|z\|^2 - \tfrac D2 \log 2\pi` per example: ``(B, ...) -> (B,)``."""
    flat = z.reshape(z.shape[0], -1)
    return -0.5 * flat.pow(2).sum(dim=1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)


class Flow(GenerativeModel):
    """A normalizing flow with a standard normal base density, trained on the exact NLL.

    Args:
        data_shape: shape of one example (linked from the data).
        flow: the architecture, ``shape -> FlowLayer`` (in a config: ``class_path`` of
            ``lightning_gm.nn.flows.RealNVP``, ``MAF``, ``MultiScaleRealNVP``, ``Glow``,
            ``PlanarStack``...; in Python also a built :class:`FlowLayer`). Default: ``RealNVP``.
        logit_alpha: if set, prepend ``LogitTransform(logit_alpha)`` for data in ``[0, 1]``
            (dequantised images); its log-det is part of ``log_prob``. ``None`` for real-valued data.
        lr_scheduler_interval: step the scheduler every ``"epoch"`` or every optimiser ``"step"`` (a per-step
            linear warm-up, as Glow's, needs ``"step"``).
        batch_norm_examples: training examples whose statistics the flow's
            :class:`~lightning_gm.nn.flows.BatchNormFlow` layers use in evaluation, recomputed under the current
            parameters before every validation (the MAF authors use the whole training set; 10,000 examples
            estimate each mean to 1% of its standard deviation). Unused by flows without batch norm.
        **kwargs: ``optimizer`` (default Adam, lr 1e-3) and ``lr_scheduler`` of
            :class:`~lightning_gm.models.base.GenerativeModel`.
    """

    family = "flow"
    monitor = "val/nll"
    monitor_mode = "min"

    def __init__(
        self,
        data_shape: Sequence[int] = (2,),
        flow: Optional[FlowFactory] = None,
        logit_alpha: Optional[float] = None,
        lr_scheduler_interval: Literal["epoch", "step"] = "epoch",
        batch_norm_examples: int = 10000,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_shape=data_shape, **kwargs)
        self.save_hyperparameters(ignore=["flow", "optimizer", "lr_scheduler"])
        if lr_scheduler_interval not in ("epoch", "step"):
            raise ConfigError(f"model.init_args.lr_scheduler_interval must be 'epoch' or 'step', got "
                              f"{lr_scheduler_interval!r}")
        self.lr_scheduler_interval = lr_scheduler_interval
        if batch_norm_examples < 1:
            raise ConfigError(f"model.init_args.batch_norm_examples must be >= 1, got {batch_norm_examples}")
        self.batch_norm_examples = batch_norm_examples
        body = flow if isinstance(flow, FlowLayer) else (flow or RealNVP)(self.data_shape)
        if not isinstance(body, FlowLayer):
            raise TypeError(f"model.flow must build a lightning_gm.nn.flows.FlowLayer, got {type(body).__name__}")
        self.logit_alpha = logit_alpha
        self.flow: FlowLayer = FlowSequence([LogitTransform(logit_alpha), body]) if logit_alpha is not None else body
        with torch.no_grad():  # fail at construction, not in the first step, when shapes do not fit
            z_shape = self.flow.forward_shape(self.data_shape)
        if int(math.prod(z_shape)) != self.data_dim:
            raise ValueError(f"model.flow maps shape {self.data_shape} to {z_shape}: not dimension-preserving")
        self.latent_shape = tuple(z_shape)

    # --- the density --------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(z, log|det dz/dx|)`` of a batch ``(B, *data_shape)``."""
        return self.flow(x)

    def log_prob(self, x: Tensor) -> Tensor:
        r"""Exact :math:`\log p(x) = \log\mathcal N(f(x)) + \log|\det \partial f/\partial x|`, shape ``(B,)``."""
        z, ladj = self.flow(x)
        return standard_normal_log_prob(z) + ladj

    @property
    def estimator(self) -> str:
        return "exact"

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` samples ``(n, *data_shape)``: :math:`f^{-1}(z)`, :math:`z \\sim \\mathcal N(0, T^2 I)`."""
        z = temperature * torch.randn(n, *self.latent_shape, device=self.device, dtype=self.dtype)
        x, _ = self.flow.inverse(z)
        return x.reshape(n, *self.data_shape)

    # --- training -----------------------------------------------------------------------------------
    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        return self._terms(self.log_prob(x), stage)

    def test_terms(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """One pass of the flow gives both the test loss and the per-example ``log p(x)``."""
        log_prob = self.log_prob(x)
        return self._terms(log_prob, "test"), log_prob

    def _terms(self, log_prob: Tensor, stage: str) -> dict[str, Tensor]:
        """The loss terms from the per-example ``log p(x)`` of a batch."""
        nll = -log_prob.mean()
        terms = {"loss": nll}
        if stage == "test":  # the base logs test/nll (and test/bpd) itself, from every example
            return terms
        terms["nll"] = nll.detach()
        offset = self._bpd_offset()
        if offset is not None:
            terms["bpd"] = (nll.detach() + offset) / (self.data_dim * math.log(2.0))
        return terms

    def _bpd_offset(self) -> Optional[float]:
        trainer = self._trainer
        return getattr(getattr(trainer, "datamodule", None), "bpd_offset", None) if trainer is not None else None

    def actnorm_layers(self) -> list[ActNorm]:
        """Every :class:`ActNorm` of the flow, in module order."""
        return [m for m in self.flow.modules() if isinstance(m, ActNorm)]

    @torch.no_grad()
    def initialize_actnorm(self, x: Tensor) -> None:
        """Data-dependent ActNorm initialisation from a training batch ``x``, identical on every process.

        One forward pass in training mode initialises each uninitialised ActNorm from its own input
        (Kingma & Dhariwal 2018); under DDP rank 0's values are then broadcast, since each process
        saw a different batch and DDP only synchronises gradients, never these parameters.
        """
        layers = [m for m in self.actnorm_layers() if not bool(m.initialized)]
        if not layers:
            return
        was_training = self.flow.training
        self.flow.train()
        self.flow(x)
        self.flow.train(was_training)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for m in layers:
                for t in (m.loc.data, m.log_scale.data):
                    dist.broadcast(t, src=0)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        self.initialize_actnorm(x)

    def on_validation_epoch_start(self) -> None:
        """Batch-norm layers evaluate with the statistics of the training data under the current parameters."""
        if not any(isinstance(m, BatchNormFlow) for m in self.flow.modules()):
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "train_dataloader"):
            raise ConfigError("a flow with batch norm needs a DataModule with a train_dataloader to set its "
                              "evaluation statistics (validation with batch norm outside `fit`)")
        self.set_batch_norm_statistics(dm.train_dataloader(), getattr(dm, "eval_batch_size", None))

    def set_batch_norm_statistics(self, loader: Iterable[Any], chunk: Optional[int] = None) -> int:
        """Set the evaluation statistics of the flow's batch-norm layers from the first
        ``batch_norm_examples`` examples of ``loader`` (a training loader; its batches are regrouped into
        chunks of ``chunk`` examples). The loader's randomness (shuffling, dequantisation noise) is drawn from a
        fixed seed inside a forked RNG, so every DDP process gets the same statistics and the training stream
        is untouched. Returns the number of examples used."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0x5EED + self.current_epoch if self._trainer is not None else 0x5EED)
            xs, total = [], 0
            for batch in loader:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                xs.append(x[: self.batch_norm_examples - total].to(self.device, self.dtype))
                total += xs[-1].shape[0]
                if total >= self.batch_norm_examples:
                    break
        data = torch.cat(xs)
        return set_batch_norm_statistics(self.flow, data.split(chunk or len(data)))

    def configure_optimizers(self) -> Any:
        config = super().configure_optimizers()
        if isinstance(config, dict):
            config["lr_scheduler"]["interval"] = self.lr_scheduler_interval
        return config
