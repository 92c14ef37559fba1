"""Checkpoints written before a family's knobs became parameter groups still load.

Old checkpoints record flat hyperparameters (``k=``, ``ais_runs=``, ``beta=``, ``test_k=``). A family lists them
in a :data:`FlatKeys` table (old name -> its group and field) and mixes in :class:`GroupedHyperparameters`, whose
``load_from_checkpoint`` rewrites the checkpoint's hyperparameters in memory first (every family with groups: the
RBM family, the VAE family, the SBN, the DBN, DBM, MP-DBM, convolutional RBM and DBN, the GAN and GMMN, the
Hopfield network, the density network); the command does the same for a checkpoint it rebuilds a model from and
for an old run folder's ``config.yaml`` (:meth:`GroupedHyperparameters.upgrade_hparams`).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
from pathlib import Path
from typing import IO, Any, ClassVar, Mapping, Optional, Union

import torch

from lightning_gm.groups import ParameterGroup

__all__ = ["FlatKeys", "GroupedHyperparameters", "upgrade_hparams", "upgraded_checkpoint", "groups_as_dicts"]


#: ``old flat name -> (group, field)``, or ``None`` for a name that no longer means anything (dropped)
FlatKeys = dict[str, Optional[tuple[str, str]]]


def _needs_upgrade(hparams: dict[str, Any], keys: FlatKeys, introduced: dict[str, Any]) -> bool:
    return any(k in hparams for k in keys) or any(k not in hparams for k in introduced)


def upgrade_hparams(hparams: dict[str, Any], keys: FlatKeys, introduced: Optional[dict[str, Any]] = None,
                    defaults: Optional[Mapping[str, ParameterGroup]] = None) -> dict[str, Any]:
    """``hparams`` with every flat key of ``keys`` moved into its group (fields already in a group win), and every
    argument of ``introduced`` that it lacks set to the value that reproduces the model it was written by.

    A group built from flat keys starts from its ``defaults`` entry (the ``__init__`` default, e.g. ConvDBN's
    ``CD(persistent=False)``: an old checkpoint recording only ``k`` was trained without persistent chains), else
    from the group class's defaults."""
    introduced = introduced or {}
    defaults = defaults or {}
    if not _needs_upgrade(hparams, keys, introduced):
        return hparams
    out = {**{k: v for k, v in introduced.items() if k not in hparams}, **hparams}
    groups: dict[str, dict[str, Any]] = {}
    for old, target in keys.items():
        if old not in out:
            continue
        value = out.pop(old)
        if target is not None:
            groups.setdefault(target[0], {})[target[1]] = value
    for name, fields in groups.items():
        existing = out.get(name) or {}
        if dataclasses.is_dataclass(existing):
            existing = dataclasses.asdict(existing)
        start = defaults[name].as_dict() if name in defaults else {}
        out[name] = {**start, **fields, **dict(existing)}
    return out


def upgraded_checkpoint(checkpoint_path: Union[str, Path, IO], keys: FlatKeys,
                        weights_only: Optional[bool] = None, introduced: Optional[dict[str, Any]] = None,
                        defaults: Optional[Mapping[str, ParameterGroup]] = None) -> Union[str, Path, IO]:
    """``checkpoint_path`` itself when its hyperparameters need no upgrade, else an in-memory copy whose
    ``hyper_parameters`` are upgraded by :func:`upgrade_hparams` (read with ``weights_only`` as Lightning would:
    ``None`` is torch's default, ``True``)."""
    safe = True if weights_only is None else bool(weights_only)
    if isinstance(checkpoint_path, (str, Path)):
        if str(checkpoint_path).startswith(("http://", "https://")) or not Path(checkpoint_path).is_file():
            return checkpoint_path  # Lightning reports it
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=safe)
    else:
        data = checkpoint_path.read()
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=safe)
        checkpoint_path = io.BytesIO(data)
    hparams = ckpt.get("hyper_parameters") or {}
    if not _needs_upgrade(hparams, keys, introduced or {}):
        return checkpoint_path
    ckpt["hyper_parameters"] = upgrade_hparams(hparams, keys, introduced, defaults)
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    buffer.seek(0)
    return buffer


def groups_as_dicts(hparams: Any, names: tuple[str, ...]) -> None:
    """Replace the dataclass groups ``names`` in a hyperparameter mapping by plain dicts, in place."""
    for name in names:
        if name in hparams and dataclasses.is_dataclass(hparams[name]):
            hparams[name] = dataclasses.asdict(hparams[name])


class GroupedHyperparameters:
    """Mixin (before :class:`~lightning_gm.models.base.GenerativeModel` in the bases) for a family whose knobs
    are parameter groups: its checkpoints store the groups as mappings, and checkpoints written before the
    groups (flat hyperparameters, listed in :attr:`flat_keys`) still load.

    Attributes:
        groups: the ``__init__`` arguments that are parameter groups (frozen dataclasses).
        flat_keys: the old flat names and the ``(group, field)`` each moved to.
        introduced: arguments added since checkpoints were first written, with the value that reproduces the
            older model (e.g. ``init="torch"``): a checkpoint that lacks one gets that value, not the new default.
    """

    groups: ClassVar[tuple[str, ...]] = ()
    flat_keys: ClassVar[FlatKeys] = {}
    introduced: ClassVar[dict[str, Any]] = {}  # as GenerativeModel.introduced

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        """The base's ``load_from_checkpoint``, flat hyperparameters folded into their groups first."""
        # (arguments introduced since are the base's: GenerativeModel.load_from_checkpoint fills them in)
        upgraded = upgraded_checkpoint(checkpoint_path, cls.flat_keys, kwargs.get("weights_only"),
                                       defaults=cls.group_defaults())
        return super().load_from_checkpoint(upgraded, *args, **kwargs)  # type: ignore[misc]

    @classmethod
    def group_defaults(cls) -> dict[str, ParameterGroup]:
        """The ``__init__`` defaults of the groups (where a group rebuilt from flat keys starts)."""
        out: dict[str, ParameterGroup] = {}
        for klass in reversed(cls.__mro__):  # a subclass's default (passed on through **kwargs) wins
            params = inspect.signature(klass.__init__).parameters if "__init__" in vars(klass) else {}
            out.update({name: params[name].default for name in cls.groups
                        if name in params and isinstance(params[name].default, ParameterGroup)})
        return out

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint's hyperparameters in today's format (:func:`upgrade_hparams` with this class's tables)."""
        return upgrade_hparams(hparams, cls.flat_keys, cls.introduced, cls.group_defaults())

    @classmethod
    def unrecorded_init_args(cls, hparams: dict[str, Any]) -> list[str]:
        return super().unrecorded_init_args(cls.upgrade_hparams(hparams))  # type: ignore[misc]

    def save_hyperparameters(self, *args: Any, **kwargs: Any) -> None:
        """The base's ``save_hyperparameters``, with the groups stored as plain mappings (a checkpoint then loads
        without unpickling classes, as ``weights_only`` loading requires)."""
        kwargs.setdefault("frame", inspect.currentframe().f_back)  # type: ignore[union-attr]
        super().save_hyperparameters(*args, **kwargs)  # type: ignore[misc]
        groups_as_dicts(self._hparams, self.groups)  # type: ignore[attr-defined]
        groups_as_dicts(self._hparams_initial, self.groups)  # type: ignore[attr-defined]
