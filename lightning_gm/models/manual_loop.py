"""The lean training loop, opt-in: "loss, backward, clip, step" with Lightning's manual optimisation.

A family whose training step is plain "loss, backward, step" (the VAE family, the RBM family) mixes in
:class:`ManualLoop` before :class:`~lightning_gm.models.base.GenerativeModel` and calls
:meth:`ManualLoop.init_manual_loop` from its ``__init__``. The loop skips ~0.5 ms of Lightning's
automatic-optimisation machinery per step (``bench/vae_overhead.py``); ``manual_backward`` keeps DDP's gradient
synchronisation and the learning-rate schedulers step as Lightning's automatic loop would step them.

Lightning does not clip gradients under manual optimisation, so clipping is a model argument
(``model.init_args.gradient_clip_val`` / ``gradient_clip_algorithm``, as in Lightning's ``Trainer``), and the
``lightning_gm`` command refuses ``trainer.gradient_clip_val`` and ``trainer.accumulate_grad_batches`` for such a
model with a message naming the model's key.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

import torch
from torch import Tensor

from lightning_gm.errors import ConfigError

__all__ = ["ManualLoop", "ClipAlgorithm"]

ClipAlgorithm = Literal["norm", "value"]


class ManualLoop:
    """Mixin of a :class:`~lightning_gm.models.base.GenerativeModel` family trained by the manual loop.

    Args (of :meth:`init_manual_loop`, which a family exposes as ``__init__`` arguments):
        update_batch_size: examples per parameter update when smaller than the data's batch size: each loaded
            batch is split into consecutive updates of this size (the same updates in the same order as loading
            them one by one, with Lightning's per-step cost paid once per loaded batch, as Keras'
            ``steps_per_execution``). ``None``: one update per loaded batch.
        gradient_clip_val: clip the gradients of every update at this value (``None`` or 0: no clipping).
        gradient_clip_algorithm: ``"norm"`` (the total 2-norm) or ``"value"`` (each element), as Lightning's.
    """

    #: capability read by the ``lightning_gm`` command: clipping and accumulation are the model's business
    manual_loop: ClassVar[bool] = True
    #: checkpoints written before clipping was a model argument were trained without it
    introduced: ClassVar[dict[str, Any]] = {"gradient_clip_val": None, "gradient_clip_algorithm": "norm"}

    update_batch_size: Optional[int] = None
    gradient_clip_val: Optional[float] = None
    gradient_clip_algorithm: str = "norm"
    _updates_per_batch: int = 1

    def init_manual_loop(self, update_batch_size: Optional[int] = None, gradient_clip_val: Optional[float] = None,
                         gradient_clip_algorithm: ClipAlgorithm = "norm") -> None:
        """Validate and set the loop's arguments (see the class docstring); turns Lightning's automatic
        optimisation off."""
        if update_batch_size is not None and update_batch_size < 1:
            raise ConfigError(f"model.init_args.update_batch_size must be >= 1 (or null), got {update_batch_size}")
        if gradient_clip_val is not None and gradient_clip_val < 0:
            raise ConfigError(f"model.init_args.gradient_clip_val must be >= 0 (or null), got {gradient_clip_val}")
        if gradient_clip_algorithm not in ("norm", "value"):
            raise ConfigError("model.init_args.gradient_clip_algorithm must be 'norm' or 'value', got "
                              f"{gradient_clip_algorithm!r}")
        self.update_batch_size = update_batch_size
        self.gradient_clip_val = float(gradient_clip_val) if gradient_clip_val else None
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self._updates_per_batch = 1
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """"Loss, backward, clip, step" once per loaded batch or, with :attr:`update_batch_size`, once per
        consecutive chunk of that many examples. Returns the mean loss of the updates."""
        opt = self.optimizers()
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        size = self.update_batch_size
        chunks = [x] if not size or size >= len(x) else list(x.split(size))
        self._updates_per_batch = max(self._updates_per_batch, len(chunks))
        total = x.new_zeros((), dtype=torch.float64)
        for chunk in chunks:
            opt.zero_grad(set_to_none=True)
            loss = self._common_step(chunk, "train")
            self._backward(loss)
            if self.gradient_clip_val:
                self.clip_gradients(opt, gradient_clip_val=self.gradient_clip_val,
                                    gradient_clip_algorithm=self.gradient_clip_algorithm)
            opt.step()
            self.step_schedulers("step")
            total = total + loss.detach()
        return total / len(chunks)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()  # type: ignore[misc]
        self.step_schedulers("epoch")

    @property
    def updates_per_epoch(self) -> float:
        """Parameter updates per training epoch (loaded batches times the updates each is split into)."""
        return float(self.trainer.num_training_batches) * self._updates_per_batch

    def _backward(self, loss: Tensor) -> None:
        """The loop's backward pass (a family with closed-form gradients may set them directly)."""
        self.manual_backward(loss)

    def step_schedulers(self, interval: str) -> None:
        """Step the schedulers with this ``interval`` as Lightning's automatic loop would: every
        ``frequency`` steps/epochs, ``ReduceLROnPlateau`` with the value of its monitor."""
        trainer = self._trainer
        if trainer is None:
            return
        count = trainer.global_step if interval == "step" else trainer.current_epoch + 1
        for config in trainer.lr_scheduler_configs:
            if config.interval != interval or count % max(1, config.frequency or 1):
                continue
            # (under manual optimisation Lightning records neither ``monitor`` nor ``reduce_on_plateau``)
            if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                value = trainer.callback_metrics.get(self.monitor)
                if value is None:
                    if trainer.sanity_checking or not trainer.val_dataloaders:
                        continue
                    raise ConfigError(
                        f"model.init_args.lr_scheduler: ReduceLROnPlateau monitors {self.monitor!r}, which "
                        f"was not logged; logged metrics: {sorted(trainer.callback_metrics)}")
                config.scheduler.step(value)
            else:
                config.scheduler.step()
