"""The command's checkpoint arguments: which checkpoint ``--ckpt_path`` names, what builds the model it is loaded
into, and one line when it does not load (a mixin of :class:`~lightning_gm.cli.GenerativeCLI`).

* ``--ckpt_path last`` / ``best`` name the run folder's checkpoints; ``test`` / ``validate`` / ``predict`` without
  one use the run's best; ``fit`` without one refuses a folder that holds a trained run.
* Lightning lets a checkpoint's saved hyperparameters rebuild the model; a ``--config`` that gives the model wins
  over them (the run's own config and its overrides), one that does not (say, a data block) does not, the
  command line's own ``--model.<key>`` options always do, and the hyperparameters of checkpoints written before a
  family's parameter groups are folded into the groups first.
* A checkpoint that does not record an injected module, or that Lightning cannot load, is one line naming it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

from jsonargparse import Namespace

from lightning_gm import find_checkpoint, imported_class
from lightning_gm.errors import ConfigError, LightningGMError
from lightning_gm.parser import GenerativeArgumentParser, config_sections

__all__ = ["CheckpointArguments", "is_rank_zero"]


def is_rank_zero() -> bool:
    """Whether this process is the first of its job (``LOCAL_RANK`` and ``NODE_RANK`` unset or 0)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def _config_sets_model(path: Path, seen: Optional[set[Path]] = None) -> bool:
    """Whether the config file ``path`` (or a file it includes with ``config:``) gives the model."""
    import yaml

    seen = seen if seen is not None else set()
    path = path.resolve()
    if path in seen:
        return False
    seen.add(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(data, dict):
        return False
    for section in config_sections(data):
        if any(k == "model" or str(k).startswith("model.") for k in section):
            return True
        includes = section.get("config")
        for include in includes if isinstance(includes, list) else [includes] if includes else []:
            if _config_sets_model(path.parent / str(include), seen):
                return True
    return False


def model_options(argv: list[str]) -> list[str]:
    """The ``--model.<key>`` options of a command line, each with its value (``--model.k=v`` or ``--model.k v``)."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg.startswith("--model."):
            out.append(arg)
            if "=" not in arg and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                out.append(argv[i + 1])
    return out


class CheckpointArguments:
    """The checkpoint half of :class:`~lightning_gm.cli.GenerativeCLI` (it provides ``config``, ``parser``,
    ``subcommand``, ``run_dir``, ``model`` and ``_section()``)."""

    def _parse_ckpt_path(self) -> None:
        """Lightning lets a checkpoint's saved hyperparameters override the command line; with a ``--config`` that
        gives the model (e.g. the run's resolved config.yaml) the config and its overrides win, so ``test --config
        run/config.yaml --ckpt_path ... --model.init_args.evaluation.test_k=1000`` means it. A ``--config`` that does
        not give the model (say, only a data block) does not stop the checkpoint from rebuilding it: the model is then
        the checkpoint's, not the class defaults. Checkpoints written before a family's parameter groups have their
        flat hyperparameters folded into the groups first (the model class's ``flat_keys``)."""
        # omegaconf+ drops the parsed `config` key when it resolves an interpolation: the command line says it too
        sub = self.config.get("subcommand")
        if not sub:
            return
        files = [str(f) for f in self.config[sub].get("config") or []] or GenerativeArgumentParser.config_files
        if any(_config_sets_model(Path(f)) for f in files):
            return
        ckpt_path = self.config[sub].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        from lightning_gm.models.checkpointing import read_hparams

        hparams = read_hparams(ckpt_path, weights_only=True)  # a whole checkpoint's load: once
        self._refuse_unrecorded_checkpoint(ckpt_path, hparams)
        hparams.pop("_instantiator", None)
        if "_class_path" not in hparams:
            super()._parse_ckpt_path()  # type: ignore[misc]
            return self._apply_model_options(sub)
        class_path = hparams.pop("_class_path")
        cls = imported_class(class_path)
        upgrade = getattr(cls, "upgrade_hparams", None)  # a family whose checkpoints may hold old flat keys
        if upgrade is not None:
            hparams = upgrade(hparams)
        try:
            self.config = self.parser.parse_object({sub: {"model": {"class_path": class_path, "dict_kwargs": hparams}}},
                                                   self.config)
        except SystemExit:
            sys.stderr.write(f"lightning_gm: error: the hyperparameters saved in {ckpt_path} do not build a "
                             f"{cls.__name__} of this version; give the run's configuration: --config <run>/config.yaml\n")
            raise
        self._apply_model_options(sub)

    def _apply_model_options(self, sub: str) -> None:
        """The command line's own ``--model.<key>`` options win over the checkpoint's values: ``test --model=VAE
        --ckpt_path ... --model.init_args.evaluation.test_k=1000`` tests with 1,000 samples."""
        overrides = model_options(GenerativeArgumentParser.command_line)
        if overrides:
            self.config[sub] = self._parser(sub).parse_args(overrides, namespace=self.config[sub].clone())

    def _refuse_unrecorded_checkpoint(self, ckpt_path: str, hparams: dict[str, Any]) -> None:
        """Without a ``--config`` the model is rebuilt from the checkpoint's hyperparameters (``hparams``) alone:
        refuse a checkpoint that does not record an injected module (it would come back with the default one)."""
        from lightning_gm.models.base import GenerativeModel

        model_cfg = self.config[self.config.subcommand].get("model")
        class_path = hparams.get("_class_path") or (model_cfg.get("class_path") if model_cfg else None)
        cls = imported_class(class_path)
        if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
            return
        missing = cls.unrecorded_init_args(hparams)
        if missing:
            raise ConfigError(
                f"checkpoint {str(ckpt_path)!r} does not record the {cls.__name__} argument(s) "
                f"{', '.join(missing)}; give the run's configuration: --config <run folder>/config.yaml "
                f"--ckpt_path {ckpt_path}")

    def _resolve_checkpoint(self, cfg: Namespace) -> None:
        """``--ckpt_path last`` / ``best`` name the run folder's checkpoints; ``test`` / ``validate`` / ``predict``
        without one use the run's best checkpoint (not the untrained model); ``fit`` without one refuses a folder
        that already holds a trained run (it would be overwritten)."""
        assert self.run_dir is not None
        folder = self.run_dir / "checkpoints"
        ckpt = cfg.get("ckpt_path")
        resume = f"lightning_gm fit --config {self.run_dir / 'config.yaml'} --ckpt_path last"
        if ckpt == "last":
            last = folder / "last.ckpt"
            if not last.is_file():
                raise ConfigError(
                    f"--ckpt_path last: {last} does not exist, so there is nothing to resume in {self.run_dir} "
                    "(the run stopped before its first step, or this is not its folder: resume a run with its own "
                    "configuration, --config runs/<experiment>/<run>/config.yaml --ckpt_path last)")
            cfg.ckpt_path = str(last)
        elif ckpt == "best" or (ckpt is None and self.subcommand != "fit" and folder.is_dir()):
            try:
                cfg.ckpt_path = str(find_checkpoint(folder))
            except LightningGMError as exc:
                raise ConfigError(f"--ckpt_path {ckpt or '(none)'}: {exc}") from None
        elif ckpt is None and self.subcommand == "fit" and is_rank_zero() and any(folder.glob("*.ckpt")):
            raise ConfigError(
                f"{self.run_dir} already holds a trained run: resume it with `{resume}`, or start a new run "
                "with another --run_name (or remove the folder)")

    def _unloadable_checkpoint(self, exc: BaseException) -> Optional[ConfigError]:
        """A checkpoint that Lightning could not load into this model, as one line naming it (the weights of another
        configuration: the first mismatch; a file torch cannot read: its first line, without torch's advice)."""
        if getattr(self, "subcommand", None) is None or getattr(self, "config", None) is None:
            return None
        ckpt = self._section().get("ckpt_path")
        text = str(exc)
        if not ckpt or not (text.startswith("Error(s) in loading state_dict") or "Weights only load failed" in text
                            or type(exc).__name__ in ("UnpicklingError", "EOFError")):
            return None
        detail = next((ln.strip() for ln in text.splitlines()[1:] if ln.strip()), "") \
            if text.startswith("Error(s)") else text.splitlines()[0].split(". ")[0] if text else type(exc).__name__
        hint = " (trained with another configuration? give its run's: --config <run>/config.yaml)" \
            if text.startswith("Error(s)") else ""
        return ConfigError(f"checkpoint {ckpt} does not load into this {type(self.model).__name__}: {detail}{hint}")
