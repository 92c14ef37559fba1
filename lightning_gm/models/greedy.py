r"""The greedy layer-wise schedule of a stack trained in one ``fit`` (:class:`~lightning_gm.models.dbn.DBN`,
:class:`~lightning_gm.models.conv_dbn.ConvDBN`): :class:`GreedySchedule`.

Layer :math:`l` trains during epochs :math:`[\sum_{m<l} e_m, \sum_{m \le l} e_m)` of ``epochs_per_layer``
:math:`(e_0, \dots, e_{L-1})`; after the schedule the top layer keeps training. The layer is derived from
``current_epoch`` (a *phase*), so a run resumed from ``last.ckpt`` lands in the right layer. A new phase starts
with no optimiser state (momentum) from the layer below.

References:
    Hinton, Osindero & Teh (2006), A fast learning algorithm for deep belief nets (greedy layer-wise training).
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_gm.errors import ConfigError

__all__ = ["GreedySchedule", "layer_sizes", "phase_at"]


def phase_at(epoch: int, epochs_per_phase: Sequence[int]) -> int:
    """The phase that trains at ``epoch`` (0-based) when phase :math:`l` takes ``epochs_per_phase[l]`` epochs after
    the ones before it (a phase of 0 epochs is skipped); ``len(epochs_per_phase)`` once they are all done."""
    for phase, end in enumerate(itertools.accumulate(epochs_per_phase)):
        if epoch < end:
            return phase
    return len(epochs_per_phase)


def layer_sizes(hidden: Sequence[int], key: str = "model.init_args.hidden") -> list[int]:
    """``hidden`` as a list of ints, refused unless it is a non-empty list of positive sizes (the error names
    ``key``)."""
    sizes = [int(h) for h in hidden]
    if not sizes or any(h < 1 for h in sizes):
        raise ConfigError(f"{key} must be a non-empty list of positive sizes, got {sizes}")
    return sizes


class GreedySchedule:
    """Mixin (before :class:`~lightning_gm.models.base.GenerativeModel`) of a greedy layer-wise stack: which layer
    trains at which epoch. A model calls :meth:`init_schedule` from its ``__init__``, and :meth:`forget_momentum`
    from ``on_train_epoch_start`` when :meth:`starts_phase` says a layer's phase begins.

    Attributes:
        epochs_per_layer: training epochs of each layer, bottom to top.
    """

    epochs_per_layer: list[int]
    current_epoch: int
    trainer: Any

    def init_schedule(self, epochs_per_layer: Sequence[int], layers: int) -> None:
        """Set :attr:`epochs_per_layer`, refused unless it has one positive number per layer."""
        epochs = [int(e) for e in epochs_per_layer]
        if len(epochs) != layers or any(e < 1 for e in epochs):
            raise ConfigError(f"model.init_args.epochs_per_layer needs one positive number per layer ({layers}), "
                              f"got {epochs}")
        self.epochs_per_layer = epochs

    @property
    def num_layers(self) -> int:
        return len(self.epochs_per_layer)

    def layer_at(self, epoch: int) -> int:
        """The layer trained at ``epoch`` (0-based): the phase of the greedy schedule (the top layer after it)."""
        return min(phase_at(epoch, self.epochs_per_layer), self.num_layers - 1)

    def phase_start(self, layer: int) -> int:
        """First epoch of ``layer``'s phase."""
        return sum(self.epochs_per_layer[:layer])

    @property
    def current_layer(self) -> int:
        return self.layer_at(self.current_epoch)

    def starts_phase(self) -> bool:
        """Whether the current epoch is the first of its layer's phase."""
        return self.current_epoch == self.phase_start(self.current_layer)

    def layer_terms(self, rbm: Any, v: Tensor, stage: str) -> dict[str, Tensor]:
        """What every stage logs of the layer in training, ``rbm`` (an RBM with ``free_energy`` and
        ``reconstruction_error``) on its input ``v``: ``recon_error`` and ``layer``; outside training also the
        ``loss`` (its mean free energy) and, at validation, ``stack_progress`` (epochs done: the checkpoint monitor,
        since no objective is comparable across layers). In training the model adds its CD ``loss``."""
        with torch.no_grad():
            terms = {"recon_error": rbm.reconstruction_error(v), "layer": torch.tensor(float(self.current_layer))}
        if stage != "train":
            terms["loss"] = rbm.free_energy(v).mean()
        if stage == "val":
            terms["stack_progress"] = torch.tensor(float(self.current_epoch + 1))
        return terms

    def forget_momentum(self) -> None:
        """Drop the optimisers' state (momentum buffers): a new layer starts with none from the old one."""
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    opt.state.pop(p, None)

    def on_fit_start(self) -> None:
        """Warn when ``trainer.max_epochs`` ends the fit before the top layer's phase."""
        super().on_fit_start()  # type: ignore[misc]
        total = sum(self.epochs_per_layer)
        if self.trainer.max_epochs is not None and 0 < self.trainer.max_epochs < total:
            rank_zero_warn(f"{type(self).__name__}: trainer.max_epochs={self.trainer.max_epochs} < "
                           f"sum(epochs_per_layer)={total}: the top layers will not be trained")
