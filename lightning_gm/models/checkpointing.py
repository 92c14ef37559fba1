"""Checkpoints and hyperparameters: the one file that relies on Lightning's private API.

:class:`RecordedHyperparameters` (a base of every :class:`~lightning_gm.models.base.GenerativeModel`) makes
Lightning's ``save_hyperparameters`` / ``load_from_checkpoint`` safe for injected modules: a model built by the
``lightning_gm`` command records its whole configuration (``class_path`` / ``init_args`` of every injected
module) and loads back as the same model; a model built in Python lists the injected objects it could not record,
and loading it without them raises :class:`CheckpointLoadError` rather than silently building the defaults.
Checkpoints written before an argument existed load with the value that reproduces them (``introduced``).

Lightning's private names used here (a change in Lightning breaks ``tests/models/test_checkpointing.py`` first):
``lightning.pytorch.core.mixins.hparams_mixin._given_hyperparameters`` (and its ``_context``), which LightningCLI
sets to the parsed configuration while it builds the model; ``lightning.fabric.utilities.cloud_io._load``;
``LightningModule._hparams`` / ``_hparams_initial``; and ``Trainer._logger_connector.should_update_logs``
(:func:`writes_logs`).
"""

from __future__ import annotations

import copy
import inspect
import io
from pathlib import Path
from typing import IO, Any, ClassVar, Optional, Sequence, Union

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.cloud_io import _load as pl_load
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters, _given_hyperparameters_context

from lightning_gm.errors import LightningGMError
from lightning_gm.groups import ParameterGroup

__all__ = ["RecordedHyperparameters", "CheckpointLoadError", "UNSAVED_KEY", "CLI_INSTANTIATOR", "read_hparams",
           "init_parameters", "writes_logs"]

#: hyperparameter key listing the injected ``__init__`` arguments a checkpoint could not record (objects given in
#: Python, not a ``class_path`` config): loading it without passing them again is refused
UNSAVED_KEY = "_unsaved_init_args"
#: the instantiator the LightningCLI records beside a config-built model's hyperparameters
CLI_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


class CheckpointLoadError(LightningGMError, ValueError):
    """A checkpoint cannot be turned back into the model that wrote it (an injected argument is not recorded)."""


def is_optimizer_arg(name: str) -> bool:
    """Optimiser and scheduler factories change how a model trains, not what it computes: a checkpoint
    that lacks them still loads into the same model."""
    return name.endswith("optimizer") or name.endswith("lr_scheduler")


def read_hparams(checkpoint_path: Union[str, Path, IO], weights_only: Optional[bool]) -> dict[str, Any]:
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


def init_parameters(cls: type) -> list[inspect.Parameter]:
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


def is_plain_data(value: Any) -> bool:
    """Config-like data (what a YAML config holds), as opposed to an object such as a module or a function."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain_data(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain_data(v) for k, v in value.items())
    return False


def unrecorded_message(cls: type, path: Any, hparams: dict[str, Any], missing: list[str]) -> str:
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


class RecordedHyperparameters(pl.LightningModule):
    """Lightning's hyperparameter saving and checkpoint loading, made safe for injected modules.

    Attributes:
        introduced: arguments added after checkpoints of the family were first written, with the value that
            reproduces the model (or the evaluation) those checkpoints were written by: a checkpoint that lacks
            one loads with that value.
    """

    introduced: ClassVar[dict[str, Any]] = {}

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
        unsaved = [n for n in names if n not in recorded and not is_optimizer_arg(n)
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
        as flat keys, which the model folds back in; an ``introduced`` argument takes its recorded old value)."""
        missing = list(hparams.get(UNSAVED_KEY) or [])
        if hparams.get("_instantiator") == CLI_INSTANTIATOR:
            missing += [p.name for p in init_parameters(cls)
                        if not is_optimizer_arg(p.name) and not isinstance(p.default, ParameterGroup)
                        and p.name not in hparams and p.name not in missing and p.name not in cls.introduced]
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
            hparams = read_hparams(checkpoint_path, weights_only)
            kwargs = {**{k: v for k, v in cls.introduced.items() if k not in hparams}, **kwargs}
            missing = [n for n in cls.unrecorded_init_args(hparams) if n not in kwargs]
            if missing:
                raise CheckpointLoadError(unrecorded_message(cls, checkpoint_path, hparams, missing))
        else:
            hparams = {}
        if hparams.get("_instantiator") == CLI_INSTANTIATOR:
            # the config-built model re-saves its configuration (and is loadable again); keyword objects it cannot
            # record as data are listed as unsaved by save_hyperparameters
            given = {k: v for k, v in hparams.items() if k != "_instantiator"}
            given.update({k: v for k, v in kwargs.items() if is_plain_data(v)})
            for k in kwargs:
                if not is_plain_data(kwargs[k]):
                    given.pop(k, None)
            with _given_hyperparameters_context(hparams=given, instantiator=CLI_INSTANTIATOR):
                return super().load_from_checkpoint(checkpoint_path, map_location=map_location, strict=strict,
                                                    weights_only=weights_only, **kwargs)
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, hparams_file=hparams_file,
                                            strict=strict, weights_only=weights_only, **kwargs)


def writes_logs(trainer: Optional[pl.Trainer]) -> bool:
    """Whether Lightning writes the logged values of the current training step (``trainer.log_every_n_steps``;
    always without a trainer and under ``fast_dev_run``)."""
    if trainer is None:
        return True
    connector = getattr(trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True) or trainer.fast_dev_run)
