r"""Generative adversarial nets (Goodfellow et al. 2014), trained with Lightning's manual optimisation.

A discriminator :math:`D(x) = \sigma(\ell(x))` and a generator :math:`G(z)`, :math:`z \sim \mathcal N(0, I)`, play

.. math::

    \min_G \max_D V(D, G), \qquad
    V(D, G) = \mathbb E_{x \sim p_\text{data}}[\log D(x)] + \mathbb E_{z}[\log(1 - D(G(z)))] .

Each training batch takes one discriminator step on
:math:`\mathcal L_D = -V = \operatorname{softplus}(-\ell(x)) + \operatorname{softplus}(\ell(G(z)))` (batch means;
:math:`\log \sigma(a) = -\operatorname{softplus}(-a)`, :math:`\log(1 - \sigma(a)) = -\operatorname{softplus}(a)`, stable
for any logit), and every ``d_steps``-th batch also one generator step (Algorithm 1 of Goodfellow et al.: ``k``
discriminator steps per generator step) on

.. math::

    \mathcal L_G^\text{minimax} = \mathbb E_z[\log(1 - D(G(z)))] = -\mathbb E_z[\operatorname{softplus}(\ell(G(z)))]
    \quad\text{or}\quad
    \mathcal L_G^\text{non-sat} = -\mathbb E_z[\log D(G(z))] = \mathbb E_z[\operatorname{softplus}(-\ell(G(z)))] ,

the second (the default) having the same fixed point but strong gradients early on, when :math:`D` rejects
every sample.

Logged: ``{stage}/d_loss``, ``g_loss``, ``value`` (:math:`V`), ``d_real`` / ``d_fake`` (mean :math:`D` on data and
samples), and at validation ``val/mmd2`` (picks the best checkpoint). Test: decoder-AIS ``test/nll``
(see :mod:`lightning_gm.models.implicit`).

References: Goodfellow et al. (2014), Generative Adversarial Nets; Radford, Metz & Chintala (2016), DCGAN;
Wu, Burda, Salakhutdinov & Grosse (2017), On the Quantitative Analysis of Decoder-Based Generative Models.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from lightning_gm.errors import ConfigError
from lightning_gm.models.base import adam
from lightning_gm.models.implicit import ImplicitGenerativeModel, NetFactory
from lightning_gm.models.manual_loop import ClipAlgorithm, ManualLoop
from lightning_gm.nn.generators import MLPDiscriminator

__all__ = ["GAN", "GeneratorLoss", "discriminator_loss", "generator_loss", "value_function"]

GeneratorLoss = Literal["minimax", "non_saturating"]


def value_function(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    r""":math:`V = \overline{\log D(x)} + \overline{\log(1 - D(G(z)))}` from discriminator logits (scalar)."""
    return -F.softplus(-real_logits).mean() - F.softplus(fake_logits).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    r"""The discriminator minimises :math:`-V` (binary cross-entropy of data vs samples)."""
    return -value_function(real_logits, fake_logits)


def generator_loss(fake_logits: Tensor, kind: GeneratorLoss = "non_saturating") -> Tensor:
    r"""``minimax``: :math:`\overline{\log(1 - D(G(z)))}`; ``non_saturating``: :math:`-\overline{\log D(G(z))}`."""
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    raise ConfigError(f"model.init_args.generator_loss must be 'minimax' or 'non_saturating', got {kind!r}")


class GAN(ManualLoop, ImplicitGenerativeModel):
    r"""Generator and discriminator trained by the minimax game (two optimisers, manual optimisation).

    Args:
        generator: factory ``(latent_dim, D) -> network`` (default MLPGenerator with ``hidden``); e.g.
            :class:`~lightning_gm.nn.generators.ConvGenerator`.
        discriminator: factory ``(D, 1) -> logit network`` (default MLPDiscriminator with
            ``discriminator_hidden``); e.g. :class:`~lightning_gm.nn.generators.ConvDiscriminator`.
        discriminator_hidden: hidden widths of the default MLP discriminator.
        generator_loss: ``minimax`` (:math:`\min \log(1 - D(G(z)))`, the value function) or
            ``non_saturating`` (:math:`\min -\log D(G(z))`, default).
        d_steps: discriminator steps per generator step (``k`` of Goodfellow et al.'s Algorithm 1; each on its own batch).
        discriminator_optimizer: optimiser factory of the discriminator (default Adam, lr 1e-3).
        gradient_clip_val, gradient_clip_algorithm: clipping of every generator and discriminator update (``None``:
            none), as :class:`~lightning_gm.models.manual_loop.ManualLoop`'s (Lightning does not clip under manual
            optimisation, so it is a model argument; the command refuses ``trainer.gradient_clip_val``).
        **kwargs: the arguments of :class:`~lightning_gm.models.implicit.ImplicitGenerativeModel` (``data_shape``,
            ``latent_dim``, ``hidden``, ``obs_sigma``, ``ais``, ``val_ais_examples``, ``optimizer`` of the generator,
            ``lr_scheduler`` applied to both optimisers and stepped every epoch), by keyword.
    """

    family = "gan"
    introduced = {**ImplicitGenerativeModel.introduced, **ManualLoop.introduced}

    def __init__(
        self,
        generator: Optional[NetFactory] = None,
        discriminator: Optional[NetFactory] = None,
        discriminator_hidden: Sequence[int] = (512, 256),
        generator_loss: GeneratorLoss = "non_saturating",
        d_steps: int = 1,
        discriminator_optimizer: OptimizerCallable = adam,
        gradient_clip_val: Optional[float] = None,
        gradient_clip_algorithm: ClipAlgorithm = "norm",
        **kwargs: Any,
    ) -> None:
        if generator_loss not in ("minimax", "non_saturating"):
            raise ConfigError(
                f"model.init_args.generator_loss must be 'minimax' or 'non_saturating', got {generator_loss!r}"
            )
        if d_steps < 1:
            raise ConfigError(f"model.init_args.d_steps must be >= 1 (discriminator steps per generator step), got {d_steps}")
        super().__init__(generator=generator, **kwargs)
        self.save_hyperparameters(ignore=["generator", "discriminator", "optimizer", "discriminator_optimizer",
                                          "lr_scheduler"])
        self.init_manual_loop(None, gradient_clip_val, gradient_clip_algorithm)  # (the GAN's own step below)
        self.generator_loss, self.d_steps = generator_loss, int(d_steps)
        self.discriminator_optimizer_factory = discriminator_optimizer
        factory = discriminator or (lambda i, o: MLPDiscriminator(i, o, hidden=discriminator_hidden))
        self.discriminator = factory(self.data_dim, 1)

    def logits(self, x: Tensor) -> Tensor:
        """Discriminator logits :math:`\\ell(x)` of flat examples ``(B, D)``: ``(B,)``."""
        return self.discriminator(x).reshape(x.shape[0])

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        """Both players' losses on a batch and fresh samples (no update; the validation/test numbers)."""
        flat = x.flatten(1)
        fake = self.generate(self.prior_noise(flat.shape[0]))
        real_logits, fake_logits = self.logits(flat), self.logits(fake)
        g_loss = generator_loss(fake_logits, self.generator_loss)
        terms = {
            "loss": g_loss, "d_loss": discriminator_loss(real_logits, fake_logits), "g_loss": g_loss,
            "value": value_function(real_logits, fake_logits),
            "d_real": torch.sigmoid(real_logits).mean(), "d_fake": torch.sigmoid(fake_logits).mean(),
        }
        if stage != "train":
            terms["mmd2"] = self.sample_mmd2(flat)
        return terms

    # --- training: manual optimisation -----------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        flat = x.flatten(1)
        opt_g, opt_d = self.optimizers()
        n = flat.shape[0]

        # discriminator: minimise -V on this batch and fresh samples (the generator is held fixed)
        self.toggle_optimizer(opt_d)
        with torch.no_grad():
            fake = self.generate(self.prior_noise(n))
        real_logits, fake_logits = self.logits(flat), self.logits(fake)
        d_loss = discriminator_loss(real_logits, fake_logits)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        self._clip(opt_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        logs = {"train/d_loss": d_loss.detach(), "train/value": -d_loss.detach(),
                "train/d_real": torch.sigmoid(real_logits.detach()).mean(),
                "train/d_fake": torch.sigmoid(fake_logits.detach()).mean()}

        # generator: every d_steps-th batch, on fresh samples (the discriminator is held fixed)
        if (batch_idx + 1) % self.d_steps == 0:
            self.toggle_optimizer(opt_g)
            g_loss = generator_loss(self.logits(self.generate(self.prior_noise(n))), self.generator_loss)
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            self._clip(opt_g)
            opt_g.step()
            self.untoggle_optimizer(opt_g)
            logs["train/g_loss"] = g_loss.detach()
        self.log_dict(logs, on_step=True, on_epoch=True, batch_size=n)
        self.log("train/loss", d_loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        return d_loss.detach()

    def _clip(self, opt: Any) -> None:
        """Clip the gradients of ``opt``'s update at ``gradient_clip_val`` (when set)."""
        if self.gradient_clip_val:
            self.clip_gradients(opt, gradient_clip_val=self.gradient_clip_val,
                                gradient_clip_algorithm=self.gradient_clip_algorithm)

    def configure_optimizers(self) -> Any:
        opt_g = self.optimizer_factory(self.generator.parameters())
        opt_d = self.discriminator_optimizer_factory(self.discriminator.parameters())
        if self.lr_scheduler_factory is None:
            return [opt_g, opt_d]
        return [opt_g, opt_d], [self.lr_scheduler_factory(opt_g), self.lr_scheduler_factory(opt_d)]
