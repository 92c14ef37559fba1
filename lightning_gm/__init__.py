"""lightning_gm: a PyTorch Lightning platform for explicit-density generative models."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Union

__version__ = "0.1.0"

__all__ = ["load_model", "find_checkpoint"]


def find_checkpoint(path: Union[str, Path]) -> Path:
    """The checkpoint a path stands for: a ``.ckpt`` file itself, or in a run folder
    (``runs/<experiment>/<run>/``) its best checkpoint ``checkpoints/best-epoch=NNN.ckpt``, else ``last.ckpt``."""
    from lightning_gm.errors import LightningGMError

    path = Path(path)
    if path.is_file():
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not folder.is_dir():
        raise LightningGMError(f"{str(path)!r} is neither a checkpoint file nor a run folder: give a .ckpt file or "
                               "runs/<experiment>/<run>/")
    best = sorted(folder.glob("best-*.ckpt"))
    if len(best) > 1:
        raise LightningGMError(f"{str(folder)!r} holds several best checkpoints "
                               f"({', '.join(p.name for p in best)}): give the .ckpt file you want")
    found = best or sorted(folder.glob("last.ckpt"))
    if not found:
        raise LightningGMError(f"no checkpoint in {str(folder)!r} (expected best-epoch=NNN.ckpt or last.ckpt): "
                               "give a .ckpt file")
    return found[0]


def load_model(path: Union[str, Path], map_location: Any = "cpu", **kwargs: Any):
    """Load a trained model without knowing its class.

    ``path`` is a checkpoint or a run folder (its best checkpoint, else ``last.ckpt``). The class is the one the
    checkpoint names (``model.class_path`` of the config it was trained with; only classes of ``lightning_gm`` are
    imported, a class from elsewhere must be imported first), and the model is built by that class's
    ``load_from_checkpoint``: same modules, same parameters. ``kwargs`` override saved arguments as in
    Lightning's ``load_from_checkpoint``. The model is returned in training mode, as Lightning does: call
    ``.eval()`` before scoring. A checkpoint written before the command saved injected modules gets them from its
    run folder's ``config.yaml``. Raises :class:`lightning_gm.models.CheckpointLoadError` for a checkpoint that does
    not record an injected argument (pass it as a keyword).
    """
    import sys

    from lightning_gm.errors import LightningGMError
    from lightning_gm.models.checkpointing import read_hparams

    ckpt = find_checkpoint(path)
    hparams = read_hparams(ckpt, weights_only=None)
    class_path = hparams.get("_class_path")
    if not isinstance(class_path, str) or "." not in class_path:
        raise LightningGMError(
            f"{str(ckpt)!r} does not name its model class (it was not trained by the lightning_gm command): load it "
            "with its class, e.g. lightning_gm.models.VAE.load_from_checkpoint(path)")
    module_name = class_path.rsplit(".", 1)[0]
    if module_name not in sys.modules:
        if module_name != "lightning_gm" and not module_name.startswith("lightning_gm."):
            raise LightningGMError(
                f"{str(ckpt)!r} names the model class {class_path!r}, outside lightning_gm and not imported: import "
                f"{module_name} first if you trust the checkpoint")
        importlib.import_module(module_name)
    cls = imported_class(class_path)
    from lightning.pytorch import LightningModule

    if not (isinstance(cls, type) and issubclass(cls, LightningModule)):
        raise LightningGMError(f"{str(ckpt)!r} names the model class {class_path!r}, which is not a LightningModule")
    kwargs = {**_from_run_config(ckpt, cls, hparams, kwargs), **kwargs}
    return cls.load_from_checkpoint(ckpt, map_location=map_location, **kwargs)


def imported_class(class_path: Any) -> Any:
    """The object a dotted ``module.Name`` path names if its module is already imported, else ``None``
    (nothing is imported here)."""
    import sys

    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module, name = class_path.rsplit(".", 1)
    return getattr(sys.modules.get(module), name, None)


def _from_run_config(ckpt: Path, cls: type, hparams: dict, given: dict) -> dict:
    """For a checkpoint written by the command before injected modules were saved with the hyperparameters: the
    missing arguments' configuration from the run folder's ``config.yaml`` (``runs/<exp>/<run>/checkpoints/x.ckpt``
    -> ``runs/<exp>/<run>/config.yaml``), the configuration the checkpoint was trained with."""
    import yaml

    from lightning_gm.models.base import GenerativeModel
    from lightning_gm.models.checkpointing import UNSAVED_KEY

    if not issubclass(cls, GenerativeModel) or hparams.get(UNSAVED_KEY):
        return {}
    missing = [n for n in cls.unrecorded_init_args(hparams) if n not in given]
    config = ckpt.resolve().parent.parent / "config.yaml"
    if not missing or not config.is_file():
        return {}
    model = (yaml.safe_load(config.read_text()) or {}).get("model") or {}
    if model.get("class_path") != hparams.get("_class_path"):
        return {}
    init_args = model.get("init_args") or {}
    return {n: init_args[n] for n in missing if n in init_args}
