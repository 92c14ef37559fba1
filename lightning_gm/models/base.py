"""The base every model family shares: one ``_common_step``, optimiser injection, test NLL and bits/dim.

A family implements :meth:`GenerativeModel.loss_terms` (its training objective and the numbers to log),
:meth:`GenerativeModel.log_prob` (its test log-likelihood estimate, named by :attr:`estimator`) and
:meth:`GenerativeModel.sample`. The base logs ``f"{stage}/{name}"`` for every term, and at test time
``test/nll`` (nats per example), its standard error, ``test/bpd`` where the data gives it a meaning.

Training metrics cost little per step: every term is added to a running sum (one tensor operation) and
handed to ``self.log`` only on the steps Lightning writes (``trainer.log_every_n_steps``) as
``train/<term>_step``; the epoch means are logged once, at the end of the epoch, as ``train/<term>_epoch``
(averaged over the DDP processes). Calling ``self.log`` on every step costs ~0.1-0.4 ms on a CPU (Lightning
moves its result buffers on each call), which is 5-10% of a small model's step (``bench/vae_overhead.py``).

A family whose training step is plain "loss, backward, step" may set ``manual_loop = True``: the base then
runs that step itself with Lightning's manual optimisation (``manual_backward`` keeps DDP's gradient
synchronisation; gradient clipping and learning-rate schedulers are applied as Lightning would), which
skips ~0.5 ms of Lightning's automatic-optimisation machinery per step. ``trainer.gradient_clip_val`` and
``trainer.gradient_clip_algorithm`` keep working through the ``lightning_gm`` command (the CLI hands them
to the model); ``trainer.accumulate_grad_batches`` is refused with a clear error for such families.
"""

from __future__ import annotations

import copy
import inspect
import io
import math
from pathlib import Path
from typing import IO, Any, ClassVar, Optional, Sequence, Union

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.cloud_io import _load as pl_load
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters, _given_hyperparameters_context
from torch import Tensor

from lightning_gm.errors import ConfigError, LightningGMError
from lightning_gm.groups import ParameterGroup
from lightning_gm.metrics import MeanStdErr, bits_per_dim

__all__ = ["GenerativeModel", "CheckpointLoadError"]

#: hyperparameter key listing the injected ``__init__`` arguments a checkpoint could not record (objects given in
#: Python, not a ``class_path`` config): loading it without passing them again is refused
UNSAVED_KEY = "_unsaved_init_args"
#: the instantiator the LightningCLI records beside a config-built model's hyperparameters
_CLI_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


class CheckpointLoadError(LightningGMError, ValueError):
    """A checkpoint cannot be turned back into the model that wrote it (an injected argument is not recorded)."""


def _is_optimizer_arg(name: str) -> bool:
    """Optimiser and scheduler factories change how a model trains, not what it computes: a checkpoint
    that lacks them still loads into the same model."""
    return name.endswith("optimizer") or name.endswith("lr_scheduler")


def _read_hparams(checkpoint_path: Union[str, Path, IO], weights_only: Optional[bool]) -> dict[str, Any]:
    """The ``hyper_parameters`` of a checkpoint (a path or a seekable file object, left at its start)."""
    if isinstance(checkpoint_path, (str, Path)):
        if not str(checkpoint_path).startswith(("http://", "https://")) and not Path(checkpoint_path).is_file():
            raise FileNotFoundError(f"checkpoint {str(checkpoint_path)!r} not found")
        ckpt = pl_load(checkpoint_path, map_location="cpu", weights_only=weights_only)
    else:
        start = checkpoint_path.tell()
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=bool(weights_only))
        checkpoint_path.seek(start)
    return dict(ckpt.get("hyper_parameters") or {})


def _init_parameters(cls: type) -> list[inspect.Parameter]:
    """The named ``__init__`` parameters of ``cls``, following ``**kwargs`` into the parents' signatures (as
    LightningCLI does): a subclass's own first, then each parent's it passes on."""
    params: list[inspect.Parameter] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        signature = list(inspect.signature(init).parameters.values())[1:]
        params += [p for p in signature if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                   and all(p.name != q.name for q in params)]
        if not any(p.kind == p.VAR_KEYWORD for p in signature):
            break
    return params


def _adam(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


def _is_plain_data(value: Any) -> bool:
    """Config-like data (what a YAML config holds), as opposed to an object such as a module or a function."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain_data(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain_data(v) for k, v in value.items())
    return False


def _unrecorded_message(cls: type, path: Any, hparams: dict[str, Any], missing: list[str]) -> str:
    where = repr(str(path)) if isinstance(path, (str, Path)) else "the checkpoint"
    args = ", ".join(f"`{n}`" for n in missing)
    passing = ", ".join(f"{n}=..." for n in missing)
    if hparams.get(UNSAVED_KEY):
        why = ("the model was built in Python with these objects, which a checkpoint cannot record as "
               "hyperparameters")
    else:
        why = ("it was written by the lightning_gm command before injected modules were saved with the "
               "hyperparameters (lightning_gm.load_model(path) takes them from the run folder's config.yaml when "
               "the checkpoint is still in <run>/checkpoints/)")
    return (f"{where} does not record the {cls.__name__} argument(s) {args}: {why}. Loading it without them would "
            f"build the defaults, i.e. a different model. Pass them again, built as for training: "
            f"{cls.__name__}.load_from_checkpoint(path, {passing})")


class GenerativeModel(pl.LightningModule):
    """Base LightningModule of every explicit-density model.

    Args:
        data_shape: shape of one example (linked from the DataModule's ``shape`` by the CLI).
        optimizer: optimiser factory ``params -> Optimizer`` (default Adam, lr 1e-3).
        lr_scheduler: optional scheduler factory ``optimizer -> LRScheduler``.
    """

    #: model family shown on the leaderboard (``vae``, ``rbm``, ``flow``, ...)
    family: ClassVar[str] = "generative"
    #: metric that picks the best checkpoint, and whether it is minimised or maximised
    monitor: ClassVar[str] = "val/loss"
    monitor_mode: ClassVar[str] = "min"
    #: arguments added after checkpoints of the family were first written, with the value that reproduces the model
    #: (or the evaluation) those checkpoints were written by: a checkpoint that lacks one loads with that value
    introduced: ClassVar[dict[str, Any]] = {}
    #: run the training step with the base's manual optimisation loop (see the module docstring)
    manual_loop: ClassVar[bool] = False
    #: manual loop only: split every loaded batch into parameter updates of this many examples (None = one
    #: update per batch); a family that offers it exposes it as an ``__init__`` argument
    update_batch_size: Optional[int] = None
    #: log ``train/loss`` (a family whose training loss value is only a gradient carrier turns it off)
    log_train_loss: ClassVar[bool] = True

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        optimizer: OptimizerCallable = _adam,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.data_dim = int(math.prod(self.data_shape))
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.test_nll = MeanStdErr()
        self.automatic_optimization = not self.manual_loop
        #: gradient clipping of the manual loop (set from ``trainer.gradient_clip_val`` by the CLI)
        self.gradient_clip_val: Optional[float] = None
        self.gradient_clip_algorithm: str = "norm"
        self._train_sums: dict[str, tuple[Tensor, int]] = {}
        self._updates_per_batch = 1

    # --- saving and loading -----------------------------------------------------------------------
    def save_hyperparameters(self, *args: Any, ignore: Optional[Union[Sequence[str], str]] = None,
                             frame: Any = None, logger: bool = True) -> None:
        """Lightning's ``save_hyperparameters``, made safe for injected modules.

        A family lists its injected ``__init__`` arguments (modules, network factories, optimiser factories) in
        ``ignore``: as Python objects they cannot be stored as hyperparameters. Built by the ``lightning_gm``
        command, however, the model receives the parsed configuration (LightningCLI's load-from-checkpoint
        support), where each of them is plain data (``class_path`` / ``init_args``): then nothing is ignored,
        and ``Model.load_from_checkpoint(path)`` rebuilds every injected module exactly as configured. Built in
        Python, the ignored arguments that were given a non-default value are listed under
        ``_unsaved_init_args``, and loading such a checkpoint without passing them again raises
        :class:`CheckpointLoadError` instead of silently building the default modules.
        """
        if frame is None:
            frame = inspect.currentframe().f_back  # the family's __init__, whose arguments are saved
        names = [ignore] if isinstance(ignore, str) else [n for n in (ignore or []) if isinstance(n, str)]
        given = _given_hyperparameters.get()
        recorded = set(given) if given is not None else set()
        unsaved = [n for n in names if n not in recorded and not _is_optimizer_arg(n)
                   and self._is_non_default_arg(frame, n)]
        super().save_hyperparameters(*args, ignore=[n for n in names if n not in recorded], frame=frame,
                                     logger=logger)
        for key, value in list(self._hparams.items()):  # parameter groups as plain data (weights_only loading)
            if isinstance(value, ParameterGroup):
                self._hparams[key] = value.as_dict()
        self._hparams.pop(UNSAVED_KEY, None)
        if unsaved:
            self._hparams[UNSAVED_KEY] = unsaved
        self._hparams_initial = copy.deepcopy(self._hparams)

    def _is_non_default_arg(self, frame: Any, name: str) -> bool:
        """Whether the ``__init__`` running in ``frame`` received a value other than its default for ``name``."""
        if name not in frame.f_locals:
            # passed on to a parent through ``**kwargs``: given (not None) means not the parent's default (None)
            code = frame.f_code
            if not code.co_flags & inspect.CO_VARKEYWORDS:
                return False
            named = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & inspect.CO_VARARGS)
            varkw = code.co_varnames[named]
            return (frame.f_locals.get(varkw) or {}).get(name) is not None
        value = frame.f_locals[name]
        init = next((c.__dict__["__init__"] for c in type(self).__mro__
                     if getattr(c.__dict__.get("__init__"), "__code__", None) is frame.f_code), None)
        param = inspect.signature(init).parameters.get(name) if init is not None else None
        default = param.default if param is not None else None
        return value is not default and value is not None

    @classmethod
    def unrecorded_init_args(cls, hparams: dict[str, Any]) -> list[str]:
        """``__init__`` arguments of ``cls`` that a checkpoint's hyperparameters cannot rebuild: injected objects
        given in Python (listed under ``_unsaved_init_args``) and, in a checkpoint written by the
        ``lightning_gm`` command before injected modules were saved, any non-optimiser argument missing from
        its configuration (a parameter group is plain data: a checkpoint older than the group records its fields
        as flat keys, which the model folds back in)."""
        missing = list(hparams.get(UNSAVED_KEY) or [])
        if hparams.get("_instantiator") == _CLI_INSTANTIATOR:
            missing += [p.name for p in _init_parameters(cls)
                        if not _is_optimizer_arg(p.name) and not isinstance(p.default, ParameterGroup)
                        and p.name not in hparams and p.name not in missing]
        return missing

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Union[str, Path, IO], map_location: Any = None,
                             hparams_file: Optional[Union[str, Path]] = None, strict: Optional[bool] = None,
                             weights_only: Optional[bool] = None, **kwargs: Any):  # type: ignore[override]
        """Lightning's ``load_from_checkpoint``, refusing to build a model that differs from the saved one.

        A model trained by the ``lightning_gm`` command comes back with every injected module (likelihood,
        prior, encoder/decoder, flow, generator, discriminator, ...) rebuilt from the configuration saved in
        the checkpoint. A checkpoint that does not record an injected argument (built in Python with an
        object) raises :class:`CheckpointLoadError` naming it, unless it is passed again as a keyword.
        """
        if hparams_file is None:
            if not isinstance(checkpoint_path, (str, Path)) and not checkpoint_path.seekable():
                checkpoint_path = io.BytesIO(checkpoint_path.read())
            hparams = _read_hparams(checkpoint_path, weights_only)
            kwargs = {**{k: v for k, v in cls.introduced.items() if k not in hparams}, **kwargs}
            missing = [n for n in cls.unrecorded_init_args(hparams) if n not in kwargs]
            if missing:
                raise CheckpointLoadError(_unrecorded_message(cls, checkpoint_path, hparams, missing))
        else:
            hparams = {}
        if hparams.get("_instantiator") == _CLI_INSTANTIATOR:
            # the config-built model re-saves its configuration (and is loadable again); keyword objects it cannot
            # record as data are listed as unsaved by save_hyperparameters
            given = {k: v for k, v in hparams.items() if k != "_instantiator"}
            given.update({k: v for k, v in kwargs.items() if _is_plain_data(v)})
            for k in kwargs:
                if not _is_plain_data(kwargs[k]):
                    given.pop(k, None)
            with _given_hyperparameters_context(hparams=given, instantiator=_CLI_INSTANTIATOR):
                return super().load_from_checkpoint(checkpoint_path, map_location=map_location, strict=strict,
                                                    weights_only=weights_only, **kwargs)
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, hparams_file=hparams_file,
                                            strict=strict, weights_only=weights_only, **kwargs)

    # --- what a family implements ---------------------------------------------------------------
    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        """Objective terms for a batch ``x``: a dict with ``"loss"`` (scalar to minimise) and any
        other scalars worth logging under ``f"{stage}/..."``."""
        raise NotImplementedError

    @property
    def estimator(self) -> str:
        """Name of the test log-likelihood estimator (``exact``, ``ais``, ``iwae-5000``, ``bound``...)."""
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """Per-example ``log p(x)`` (or the family's estimate of it), shape ``(B,)``."""
        raise NotImplementedError

    def sample(self, n: int) -> Tensor:
        """``n`` samples of shape ``(n, *data_shape)``."""
        raise NotImplementedError

    # --- the shared loop --------------------------------------------------------------------------
    def _common_step(self, batch: Any, stage: str) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        terms = self.loss_terms(x, stage)
        if stage == "train":
            self._log_train_terms(terms, x.shape[0])
            return terms["loss"]
        self._log_eval_terms(terms, stage, x.shape[0])
        return terms["loss"]

    def _log_eval_terms(self, terms: dict[str, Tensor], stage: str, batch_size: int) -> None:
        """Log a validation/test batch's terms as epoch means ``f"{stage}/{name}"`` (averaged over processes)."""
        self.log_dict(
            {f"{stage}/{k}": v.detach() for k, v in terms.items() if k != "loss"},
            on_step=False, on_epoch=True, prog_bar=False, batch_size=batch_size, sync_dist=True,
        )
        self.log(f"{stage}/loss", terms["loss"], on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=batch_size, sync_dist=True)

    def is_logging_step(self) -> bool:
        """Whether Lightning writes this training step's logged values (``trainer.log_every_n_steps``): a family
        computes monitors that cost extra work only on such steps."""
        trainer = self._trainer
        if trainer is None:
            return True
        connector = getattr(trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True) or trainer.fast_dev_run)

    def _log_train_terms(self, terms: dict[str, Tensor], batch_size: int) -> None:
        """Add the step's terms to the epoch sums; hand them to the loggers on the steps that are written."""
        for key, value in terms.items():
            if key == "loss" and not self.log_train_loss:
                continue
            value = value.detach()
            if key in self._train_sums:
                total, count = self._train_sums[key]
                self._train_sums[key] = (total.add_(value, alpha=batch_size), count + batch_size)
            else:
                self._train_sums[key] = (value * batch_size, batch_size)
        if self._trainer is None or not self.is_logging_step():
            return
        self.log_dict({f"train/{k}_step": v.detach() for k, v in terms.items() if k != "loss"},
                      on_step=True, on_epoch=False, batch_size=batch_size)
        if self.log_train_loss:
            self.log("train/loss_step", terms["loss"].detach(), on_step=True, on_epoch=False, prog_bar=True,
                     batch_size=batch_size)

    def on_train_epoch_end(self) -> None:
        """Log the epoch means of the training terms (``train/<term>_epoch``, averaged over processes)."""
        if self._train_sums:
            means = {f"train/{k}_epoch": (total / count).float() for k, (total, count) in self._train_sums.items()}
            self.log_dict(means, on_step=False, on_epoch=True, sync_dist=True)
        self._train_sums = {}
        if not self.automatic_optimization:
            self._step_schedulers("epoch")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if self.automatic_optimization:
            return self._common_step(batch, "train")
        return self._manual_step(batch)

    # --- the manual loop (``manual_loop = True``) -----------------------------------------------------
    def _manual_step(self, batch: Any) -> Tensor:
        """"Loss, backward, clip, step" with Lightning's manual optimisation, once per loaded batch or, with
        :attr:`update_batch_size`, once per consecutive chunk of that many examples (the same updates in the
        same order as loading the chunks one by one, with Lightning's per-step cost paid once per batch, as
        Keras' ``steps_per_execution``). Returns the mean loss of the updates."""
        opt = self.optimizers()
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        size = self.update_batch_size
        chunks = [x] if not size or size >= len(x) else list(x.split(size))
        self._updates_per_batch = max(self._updates_per_batch, len(chunks))
        total = x.new_zeros((), dtype=torch.float64)
        for chunk in chunks:
            opt.zero_grad(set_to_none=True)  # type: ignore[union-attr]
            loss = self._common_step(chunk, "train")
            self._backward(loss)
            if self.gradient_clip_val:
                self.clip_gradients(opt, gradient_clip_val=self.gradient_clip_val,  # type: ignore[arg-type]
                                    gradient_clip_algorithm=self.gradient_clip_algorithm)
            opt.step()  # type: ignore[union-attr]
            self._step_schedulers("step")
            total = total + loss.detach()
        return total / len(chunks)

    def set_update_batch_size(self, update_batch_size: Optional[int]) -> None:
        """Validate and set :attr:`update_batch_size` (for families that expose it as an argument)."""
        if update_batch_size is not None and update_batch_size < 1:
            raise ConfigError(f"model.init_args.update_batch_size must be >= 1 (or null), got {update_batch_size}")
        if update_batch_size is not None and not self.manual_loop:
            raise ConfigError(f"model.init_args.update_batch_size: {type(self).__name__} has no manual loop")
        self.update_batch_size = update_batch_size

    @property
    def updates_per_epoch(self) -> float:
        """Parameter updates per training epoch (loaded batches times the updates each is split into)."""
        return float(self.trainer.num_training_batches) * self._updates_per_batch

    def _backward(self, loss: Tensor) -> None:
        """The manual loop's backward pass (a family with closed-form gradients may set them directly)."""
        self.manual_backward(loss)

    def _step_schedulers(self, interval: str) -> None:
        """Step the schedulers with this ``interval`` as Lightning's automatic loop would: every
        ``frequency`` steps/epochs, ``ReduceLROnPlateau`` with the value of its monitor."""
        trainer = self._trainer
        if trainer is None:
            return
        count = trainer.global_step if interval == "step" else trainer.current_epoch + 1
        for config in trainer.lr_scheduler_configs:
            if config.interval != interval or count % max(1, config.frequency or 1):
                continue
            if config.reduce_on_plateau:
                value = trainer.callback_metrics.get(config.monitor or self.monitor)
                if value is None:
                    if trainer.sanity_checking or not trainer.val_dataloaders:
                        continue
                    raise ConfigError(
                        f"model.init_args.lr_scheduler: ReduceLROnPlateau monitors {config.monitor!r}, which "
                        f"was not logged; logged metrics: {sorted(trainer.callback_metrics)}")
                config.scheduler.step(value)  # type: ignore[call-arg]
            else:
                config.scheduler.step()

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._common_step(batch, "val")

    def test_terms(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The loss terms of a test batch (as :meth:`loss_terms` with ``stage="test"``) and its per-example
        ``log p(x)`` (as :meth:`log_prob`), shape ``(B,)``.

        The default evaluates the model twice, once for each. A family whose ``log_prob`` already yields the
        loss terms (flows, autoregressive and other exact models: the loss is ``-log_prob(x).mean()``)
        overrides it to evaluate once, which halves the cost of its test epoch."""
        return self.loss_terms(x, "test"), self.log_prob(x)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        terms, log_prob = self.test_terms(x)
        self._log_eval_terms(terms, "test", x.shape[0])
        self.test_nll.update(-log_prob)

    def on_test_epoch_end(self) -> None:
        nll, stderr, _ = self.test_nll.compute()
        self.log("test/nll", nll.float(), sync_dist=False)
        self.log("test/nll_stderr", stderr.float(), sync_dist=False)
        offset = getattr(getattr(self.trainer, "datamodule", None), "bpd_offset", None)
        if offset is not None:
            self.log("test/bpd", float(bits_per_dim(nll.item(), self.data_dim, offset)), sync_dist=False)
        self.test_nll.reset()

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Per-example log-likelihood estimates of the batch."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.log_prob(x)

    def configure_optimizers(self) -> Any:
        opt = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return opt
        sched = self.lr_scheduler_factory(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": self.monitor}}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
