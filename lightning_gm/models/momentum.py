r"""Momentum warm-up of the SGD-trained energy models (Hinton 2010, section 9): :class:`MomentumWarmup`.

Early in training the gradient estimates are large and noisy, so the guide starts with a small momentum
(0.5) and switches to the optimiser's configured one (0.9) after a few epochs. The RBM family counts the
epochs from the start of the fit; the DBN from the start of each layer's phase (every layer is a new RBM).

References:
    Hinton (2010), A practical guide to training restricted Boltzmann machines, section 9.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

from lightning_gm.groups import ParameterGroup

__all__ = ["MomentumWarmup", "FLAT_MOMENTUM_KEYS"]


@dataclass(frozen=True)
class MomentumWarmup(ParameterGroup):
    """Momentum ``initial`` for the first ``epochs`` epochs, then the optimiser's own.

    Args:
        initial: momentum of the warm-up epochs (Hinton: 0.5), in [0, 1).
        epochs: warm-up epochs (Hinton: 5); 0 = always the optimiser's momentum, >= 0.

    References:
        Hinton (2010), section 9.
    """

    key: ClassVar[str] = "model.init_args.momentum"
    initial: float = 0.5
    epochs: int = 5

    def __post_init__(self) -> None:
        self.require("initial", 0 <= self.initial < 1, "in [0, 1)")
        self.require("epochs", self.epochs >= 0, ">= 0")

    def apply(self, optimizers: Iterable[Any], epoch: int) -> None:
        """Set the momentum of every parameter group that has one for ``epoch`` (0-based, counted from where the
        warm-up starts): ``initial`` while ``epoch < epochs``, else the optimiser's configured momentum (kept in
        the group as ``final_momentum``). Nothing to do without warm-up epochs."""
        if self.epochs <= 0:
            return
        for opt in optimizers:
            for group in opt.param_groups:
                if "momentum" in group:
                    group.setdefault("final_momentum", group["momentum"])
                    group["momentum"] = self.initial if epoch < self.epochs else group["final_momentum"]


#: the flat keys of checkpoints written before the group, and where they live now
FLAT_MOMENTUM_KEYS = {"initial_momentum": ("momentum", "initial"), "momentum_warmup_epochs": ("momentum", "epochs")}
