"""How the ``lightning_gm`` Lightning commands read and write configurations.

* :class:`GenerativeArgumentParser`: LightningCLI's parser without abbreviated options, whose every error is one
  line naming the key, the config file that holds it (when it is not on the command line) and a likely spelling;
* :class:`SaveResolvedConfig`: the resolved configuration written into the run folder when a command's loop starts
  (``config.yaml`` for ``fit``, ``<command>-<time>.yaml`` for the others) and logged once as the W&B config;
* :func:`count_before_fraction`: ``--trainer.limit_test_batches=1`` read as one batch, not 100%;
* :func:`upgraded_config_text`: a config file written before a family's parameter groups (an old run folder's
  ``config.yaml`` with flat ``k``, ``num_chains``, ``ais_runs``, ...) read with those keys moved into the groups, as
  its old checkpoints are.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Optional, Sequence, Union

import yaml
from lightning.pytorch.cli import LightningArgumentParser, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger

__all__ = ["GenerativeArgumentParser", "SaveResolvedConfig", "condense_error", "config_sections",
           "count_before_fraction", "register_resolvers", "total", "upgraded_config_text"]

_NOISE = re.compile(
    r"^\s*(- )?(Does not validate against any of the Union subtypes|Subtypes: \[.*\]|Errors:"
    r"|- Expected a <class 'NoneType'>|Given value type: .*|- Expected a path but .* either not accessible or invalid)\s*$"
)


def total(*values: Any) -> int:
    """The ``${sum:...}`` resolver of the configs: the sum of its arguments, lists summed element by element
    (``trainer.max_epochs: ${sum:${model.init_args.epochs_per_layer},300}`` = the greedy phases + 300 joint epochs),
    so a value that must agree with others is computed, not copied by hand."""
    out = 0
    for value in values:
        items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        for item in items:
            try:
                out += int(item)
            except (TypeError, ValueError):
                raise ValueError(f"${{sum:...}} adds whole numbers, got {item!r}") from None
    return out


def register_resolvers() -> None:
    """Make the configs' resolvers known to OmegaConf (``${sum:...}``); idempotent."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("sum"):
        OmegaConf.register_resolver("sum", total)  # OmegaConf >= 2.4 (register_new_resolver is deprecated there)


def condense_error(message: str) -> str:
    """Drop jsonargparse's union bookkeeping so the message is the key, the problem and the value."""
    return "\n".join(line for line in message.splitlines() if not _NOISE.match(line))


def _flat_keys(data: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            out.add(key)
            out |= _flat_keys(v, key)
    elif isinstance(data, list):
        for item in data:
            out |= _flat_keys(item, prefix)
    return out


def config_sections(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The parts of a loaded config file that configure a command: the file itself and its per-command blocks
    (``fit:``, ``test:``, ... as LightningCLI's top-level form writes them)."""
    from lightning_gm.command import LIGHTNING_COMMANDS

    return [data, *(data[k] for k in LIGHTNING_COMMANDS if isinstance(data.get(k), dict))]


def upgraded_config_text(content: str, path: Any = "") -> str:
    """``content`` (a config file's text) with the flat model keys of an old run's configuration moved into their
    parameter groups (the model class's ``upgrade_hparams``: its ``flat_keys``, a group's ``__init__`` default as the
    start, and for arguments it lacks their ``introduced`` values, those that reproduce the model it describes), and
    one line on stderr saying so; unchanged when there is nothing to move (or the text is not YAML: the parser
    reports that)."""
    from lightning_gm import imported_class

    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError:
        return content
    if not isinstance(data, dict):
        return content
    moved: list[str] = []
    for section in config_sections(data):
        model = section.get("model")
        init_args = model.get("init_args") if isinstance(model, dict) else None
        cls = imported_class(model.get("class_path")) if init_args else None
        keys = getattr(cls, "flat_keys", None)
        old = [k for k in init_args if k in keys] if isinstance(init_args, dict) and keys else []
        if not old:
            continue
        model["init_args"] = _plain(cls.upgrade_hparams(init_args))  # the family's own tables and group defaults
        moved += [f"{k} as {'.'.join(keys[k])}" if keys[k] else f"{k} (no longer used)" for k in old]
    if not moved:
        return content
    path = os.path.abspath(path) if path else ""  # jsonargparse reads a file from inside its folder
    sys.stderr.write(f"lightning_gm: {path or 'the config'} was written before the parameter groups: read "
                     f"{', '.join(moved)}\n")
    return yaml.safe_dump(data, sort_keys=False)


def _plain(value: Any) -> Any:
    """``value`` as YAML's plain types (tuples as lists), for writing it back as a config's text."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class GenerativeArgumentParser(LightningArgumentParser):
    """The CLI's parser: no abbreviated options (``--trainer.max_epoch`` is an error, not ``max_epochs``),
    and every error one line naming the key and, when it comes from a config file, the file."""

    #: the command line and its ``--config`` files, to say which file holds a bad key
    command_line: list[str] = []
    config_files: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _load_config_parser_mode(self, content: str, path: Any = "", *args: Any, **kwargs: Any) -> Any:
        """jsonargparse's reading of one config file, after :func:`upgraded_config_text`."""
        return super()._load_config_parser_mode(upgraded_config_text(content, path), path, *args, **kwargs)

    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:  # type: ignore[override]
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(condense_error(message), ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        sys.stderr.write(f"{parser.prog.replace(' [options]', '')}: error: {self.one_line(message, parser)}\n")
        sys.exit(2)

    def one_line(self, message: str, parser: Any) -> str:
        """jsonargparse's message in one line, with the config file that holds the key (when the key is not on
        the command line) and a likely spelling."""
        lines = [ln.strip() for ln in condense_error(message).splitlines() if ln.strip()]
        text = " ".join(ln for ln in lines if not ln.startswith("Given value"))
        keys = re.findall(r"(?i:option|key) ['\"]([\w.]+)['\"]|unrecognized arguments: --([\w.]+)", text)
        keys = [a or b for a, b in keys]
        if not keys:
            return text
        key = keys[-1]  # the innermost key of a nested message
        given = [a[2:].split("=", 1)[0] for a in self.command_line if a.startswith("--")]
        on_command_line = any(g == key or g.endswith("." + key) for g in given)
        where = [f for f in self.config_files if self._holds(f, key)]
        if where and not on_command_line and where[-1] not in text:
            text = f"{where[-1]}: {text}"
        known = sorted({a.dest for a in getattr(parser, "_actions", []) if isinstance(a.dest, str)})
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if close and close[0] != key:
            text += f" (did you mean {close[0]}?)"
        return text

    @staticmethod
    def _holds(path: str, key: str) -> bool:
        try:
            keys = _flat_keys(yaml.safe_load(Path(path).read_text()))
        except (OSError, yaml.YAMLError):
            return False
        return key in keys or any(k.endswith("." + key) for k in keys)


class SaveResolvedConfig(SaveConfigCallback):
    """Save the command's resolved configuration into the run folder when its loop starts (a command that fails
    before that writes nothing), and, for ``fit``, log it once as the run's config in W&B.

    ``fit`` writes ``config.yaml``: the run's configuration, which re-tests and resumes it (so without a
    ``ckpt_path``, and without the W&B run id, which each command takes from ``summary.json``). Every other
    command writes its own ``<command>-<time>.yaml`` beside it and leaves ``config.yaml`` as it is.
    """

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        pass  # written at the start of the loop, see _write

    def _write(self, trainer: Any, pl_module: Any) -> None:
        if getattr(self, "_written", False) or not trainer.is_global_zero:
            return
        self._written = True
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        config.pop("config", None)
        if self.config_filename == "config.yaml":
            config["ckpt_path"] = None
        for logger in (config.get("trainer") or {}).get("logger") or []:
            if isinstance(logger, dict) and str(logger.get("class_path", "")).endswith("WandbLogger"):
                (logger.get("init_args") or {}).pop("id", None)
        path = Path(trainer.default_root_dir) / self.config_filename
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# lightning_gm {trainer.state.fn.value}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        path.write_text(header + yaml.safe_dump(config, sort_keys=False))
        if trainer.state.fn == "fit":
            for logger in trainer.loggers:
                if not isinstance(logger, LightningCSVLogger):  # config.yaml is the CSV side's record
                    logger.log_hyperparams(config)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._write(trainer, pl_module)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._write(trainer, pl_module)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.state.fn == "validate":
            self._write(trainer, pl_module)

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._write(trainer, pl_module)


_LIMIT_KEYS = tuple(f"trainer.limit_{stage}_batches" for stage in ("train", "val", "test", "predict"))


def count_before_fraction(parser: LightningArgumentParser) -> None:
    """``--trainer.limit_test_batches=1`` means one batch, as in Lightning's docs (an int is a number of
    batches, a float a fraction). The Trainer's signature types these keys ``Union[float, int, None]``, and
    jsonargparse tries the types in order, so ``1`` became ``1.0``, i.e. the whole set. Here they read an
    integer as an int first (``1.0`` stays a fraction)."""
    for action in parser._actions:
        if action.dest in _LIMIT_KEYS and hasattr(action, "_typehint"):
            action._typehint = Optional[Union[int, float]]
