"""Parameter groups: the knobs several models share, as frozen dataclasses checked once.

A group (e.g. :class:`~lightning_gm.nn.rbm.CD`, :class:`~lightning_gm.estimators.ais.AISSchedule`) lives
beside the maths it configures, subclasses :class:`ParameterGroup` and checks its ranges in
``__post_init__`` with :meth:`ParameterGroup.require` (a ``ValueError`` naming ``<key>.<field>``). A model
takes it as one typed ``__init__`` argument, so LightningCLI shows it as a nested block (``cd:`` with ``k``,
``persistent``, ``chains``) and accepts ``--model.init_args.cd.k=3``; a subclass changes a default by
declaring the argument again with another instance (``cd: CD = CD(persistent=False)``).

Checkpoints store a group as a plain dictionary (so they load with ``weights_only=True``) and
:meth:`ParameterGroup.coerce` turns it back into the group.

How checkpoints written before a family's groups still load is the models' business:
:mod:`lightning_gm.models.migration` (this module, imported by ``nn/`` and ``estimators/``, stays plain data).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, TypeVar

__all__ = ["ParameterGroup"]

G = TypeVar("G", bound="ParameterGroup")


@dataclasses.dataclass(frozen=True)
class ParameterGroup:
    """Base of the frozen dataclass parameter groups (itself a field-less frozen dataclass, so that LightningCLI
    sees a pure dataclass and shows the group as a nested block, not as a ``class_path``).

    Attributes:
        key: where the group sits in a config (``model.init_args.cd``, ...), so that an error names the key a
            user sets (the project's convention for every model argument).
    """

    key: ClassVar[str] = "group"

    def require(self, name: str, ok: bool, need: str) -> None:
        """Raise ``ValueError("<key>.<name> must be <need>, got <value>")`` unless ``ok``."""
        if not ok:
            raise ValueError(f"{self.key}.{name} must be {need}, got {getattr(self, name)!r}")

    @classmethod
    def coerce(cls: type[G], value: Any) -> G:
        """``value`` as a ``cls``: the group itself, or a mapping of its fields (as stored in checkpoints)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            unknown = sorted(set(value) - names)
            if unknown:
                raise ValueError(f"{cls.key}: unknown field(s) {unknown}; {cls.__name__} has {sorted(names)}")
            try:
                return cls(**value)
            except TypeError as exc:  # a field of the wrong kind
                raise ValueError(f"{cls.key}: {exc}") from exc
        raise ValueError(f"{cls.key} must be a {cls.__name__} (or a mapping of its fields), got {value!r}")

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dictionary (what a checkpoint stores)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def replace(self: G, **changes: Any) -> G:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
