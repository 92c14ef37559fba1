"""The ``lightning_gm`` command: a LightningCLI (``fit / validate / test / predict``) plus our own subcommands.

Every run lives in one folder, ``<runs_dir>/<experiment>/<run_name>/``::

    config.yaml        the resolved configuration (re-run or re-test with --config)
    checkpoints/       best-epoch=NNN.ckpt (by the model's monitor) and last.ckpt
    metrics.csv        every logged metric (CSV logger)
    samples/           sample and reconstruction pictures
    summary.json       final numbers, the test estimator, wall time
    wandb/             the W&B run (offline unless WANDB_API_KEY is set; `wandb sync` later)

``experiment`` defaults to the config file's name, ``run_name`` to a timestamp.
"""

from __future__ import annotations

import netrc
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Union

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from lightning_gm import imported_class
from lightning_gm.callbacks import DivergenceGuard, RNGStateCheckpoint, RunSummary
from lightning_gm.callbacks.pruning import OptunaPruning
from lightning_gm.dashboard import main as compare_main
from lightning_gm.data.modules import GenerativeDataModule
from lightning_gm.errors import ConfigError, LightningGMError
from lightning_gm.sweep import PRUNED_EXIT_CODE, TRIAL_ENV
from lightning_gm.sweep import main as sweep_main

__all__ = ["GenerativeCLI", "main", "EXTRA_COMMANDS"]

RUN_NAME_ENV = "LIGHTNING_GM_RUN_NAME"
_LOGGER_DIRS = {
    "CSVLogger": {"name": "", "version": ""},
    "TensorBoardLogger": {"name": "tensorboard", "version": ""},
}


def _wandb_needs_offline() -> bool:
    """W&B goes offline unless the user chose a mode (``WANDB_MODE``) or has credentials
    (``WANDB_API_KEY`` or a ``wandb login`` entry in ~/.netrc): no prompt, no hang, ``wandb sync`` later."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


_NOISE = re.compile(
    r"^\s*(- )?(Does not validate against any of the Union subtypes|Subtypes: \[.*\]|Errors:"
    r"|- Expected a <class 'NoneType'>|Given value type: .*)\s*$"
)


def condense_error(message: str) -> str:
    """Drop jsonargparse's union bookkeeping so the message is the key, the problem and the value."""
    return "\n".join(line for line in message.splitlines() if not _NOISE.match(line))


class GenerativeArgumentParser(LightningArgumentParser):
    """The CLI's parser: no abbreviated options (``--trainer.max_epoch`` is an error, not
    ``max_epochs``) and config errors without the union bookkeeping."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:  # type: ignore[override]
        return super().error(condense_error(message), ex)


class SaveResolvedConfig(SaveConfigCallback):
    """Save ``config.yaml`` into the run folder (Lightning's behaviour) and log the whole resolved
    config (trainer, model, data, run keys) as the run's config in every logger (W&B, CSV's hparams)."""

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams(resolved)


_LIMIT_KEYS = tuple(f"trainer.limit_{stage}_batches" for stage in ("train", "val", "test", "predict"))


def _count_before_fraction(parser: LightningArgumentParser) -> None:
    """``--trainer.limit_test_batches=1`` means one batch, as in Lightning's docs (an int is a number of
    batches, a float a fraction). The Trainer's signature types these keys ``Union[float, int, None]``, and
    jsonargparse tries the types in order, so ``1`` became ``1.0``, i.e. the whole set. Here they read an
    integer as an int first (``1.0`` stays a fraction)."""
    for action in parser._actions:
        if action.dest in _LIMIT_KEYS and hasattr(action, "_typehint"):
            action._typehint = Optional[Union[int, float]]


class GenerativeCLI(LightningCLI):
    """LightningCLI in omegaconf mode, subclass mode for ``model`` and ``data``, with run folders."""

    def __init__(self, args: Any = None, run: bool = True) -> None:
        self.exit_code = 0
        self.pruning: Optional[OptunaPruning] = None
        super().__init__(
            # any LightningModule: the generative families (GenerativeModel) and the feature network
            # of the sample-quality metrics (models.MNISTClassifier) train through the same command
            model_class=LightningModule,
            datamodule_class=GenerativeDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_kwargs={"parser_mode": "omegaconf", "prog": "lightning_gm"},
            save_config_callback=SaveResolvedConfig,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            parser_class=GenerativeArgumentParser,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--experiment", type=Optional[str], default=None,
                            help="Experiment (group of runs); default: the config file's name.")
        parser.add_argument("--run_name", type=Optional[str], default=None,
                            help="Name of this run's folder; default: a timestamp.")
        parser.add_argument("--runs_dir", type=str, default="runs", help="Root folder of all runs.")
        parser.add_argument("--tags", type=list[str], default=[],
                            help="Tags of the run (W&B tags and summary.json).")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="After fit, evaluate the best checkpoint on the test set (test/nll).")
        parser.link_arguments("data.shape", "model.init_args.data_shape", apply_on="instantiate")
        _count_before_fraction(parser)

    def instantiate_classes(self) -> None:
        """Build model, data and trainer; a value a class rejects becomes one ConfigError message."""
        try:
            super().instantiate_classes()
        except LightningGMError:
            raise
        except (ValueError, TypeError) as exc:
            detail = "\n".join(ln for ln in condense_error(str(exc)).splitlines() if not ln.strip().startswith("Given value"))
            raise ConfigError(f"the configuration could not be built:\n{detail.strip()}") from exc
        self._hand_clipping_to_manual_loop()

    def _hand_clipping_to_manual_loop(self) -> None:
        """A family with the base's manual loop (``manual_loop = True``) clips its own gradients: move
        ``trainer.gradient_clip_val`` / ``gradient_clip_algorithm`` to the model, where Lightning would
        otherwise refuse them; refuse ``accumulate_grad_batches`` with a message that says why."""
        model, trainer = getattr(self, "model", None), getattr(self, "trainer", None)
        if trainer is None or not getattr(model, "manual_loop", False):
            return
        if trainer.gradient_clip_val:
            model.gradient_clip_val = float(trainer.gradient_clip_val)
            algorithm = trainer.gradient_clip_algorithm
            model.gradient_clip_algorithm = str(getattr(algorithm, "value", algorithm) or "norm")
            trainer.gradient_clip_val, trainer.gradient_clip_algorithm = None, None
        if trainer.accumulate_grad_batches != 1:
            raise ConfigError(
                f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches}: {type(model).__name__} trains "
                "with a manual optimisation step, which does not accumulate gradients; raise data.init_args.batch_size "
                "instead")

    def _parse_ckpt_path(self) -> None:
        """Lightning lets a checkpoint's saved hyperparameters override the command line; with a
        ``--config`` (e.g. the run's resolved config.yaml) the config and its overrides win, so
        ``test --config run/config.yaml --ckpt_path ... --model.init_args.test_k=1000`` means it."""
        if self.config.get("subcommand") and self.config[self.config.subcommand].get("config"):
            return
        self._refuse_unrecorded_checkpoint()
        super()._parse_ckpt_path()

    def _refuse_unrecorded_checkpoint(self) -> None:
        """Without a ``--config`` the model is rebuilt from the checkpoint's hyperparameters alone: refuse a
        checkpoint that does not record an injected module (it would come back with the default one)."""
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path") if self.config.get("subcommand") else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        from lightning_gm.models.base import GenerativeModel, _read_hparams

        hparams = _read_hparams(ckpt_path, weights_only=True)
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

    # --- the run folder ------------------------------------------------------------------------
    def _section(self) -> Namespace:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        cfg = self._section()
        if not cfg.experiment:
            files = cfg.get("config") or []
            cfg.experiment = Path(str(files[0])).stem if files else "default"
        if not cfg.run_name:
            inherited = os.environ.get(RUN_NAME_ENV) if os.environ.get("LOCAL_RANK", "0") != "0" else None
            cfg.run_name = inherited or self._fresh_run_name(Path(cfg.runs_dir) / cfg.experiment)
        os.environ[RUN_NAME_ENV] = cfg.run_name  # DDP re-launches this command line: share the name
        self.run_dir = Path(cfg.runs_dir) / cfg.experiment / cfg.run_name
        cfg.trainer.default_root_dir = str(self.run_dir)
        self._place_loggers(cfg)

    @staticmethod
    def _fresh_run_name(parent: Path) -> str:
        base = time.strftime("%Y%m%d-%H%M%S")
        name, i = base, 0
        while (parent / name).exists():
            i += 1
            name = f"{base}-{i}"
        return name

    def _place_loggers(self, cfg: Namespace) -> None:
        loggers = cfg.trainer.logger
        if loggers is None or loggers is True:
            loggers = [Namespace(class_path="lightning_gm.loggers.CSVLogger", init_args=Namespace())]
        if loggers is False:
            return
        if not isinstance(loggers, list):
            loggers = [loggers]
        for lg in loggers:
            if not isinstance(lg, Namespace) or "class_path" not in lg:
                continue
            kind = lg.class_path.rsplit(".", 1)[-1]
            args = lg.get("init_args") or Namespace()
            args.save_dir = str(self.run_dir)
            if kind == "WandbLogger":
                args.name = cfg.run_name
                args.group = args.get("group") or cfg.experiment
                args.job_type = self.subcommand
                args.tags = sorted(set(args.get("tags") or []) | set(cfg.tags or []))
                if _wandb_needs_offline():
                    args.offline = True
            for k, v in _LOGGER_DIRS.get(kind, {}).items():
                args[k] = v
            lg.init_args = args
        cfg.trainer.logger = loggers

    def instantiate_trainer(self, **kwargs: Any):  # type: ignore[override]
        from lightning_gm.callbacks.registry import callbacks_for

        cfg = self._section()
        platform = [DivergenceGuard(), RNGStateCheckpoint(),
                    RunSummary(str(self.run_dir), cfg.experiment, cfg.run_name, tags=list(cfg.tags or [])),
                    *callbacks_for(self.model)]  # what the model declares: evaluations, schedule progress
        trial = os.environ.get(TRIAL_ENV)
        self.pruning = OptunaPruning.from_env(trial) if trial and self.subcommand == "fit" else None
        if self.pruning is not None:
            platform.append(self.pruning)
        configured = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        if not any(isinstance(c, ModelCheckpoint) for c in configured):
            platform.append(
                ModelCheckpoint(
                    dirpath=str(self.run_dir / "checkpoints"),
                    filename="best-{epoch:03d}",
                    monitor=getattr(self.model, "monitor", None),
                    mode=getattr(self.model, "monitor_mode", "min"),
                    save_top_k=1,
                    save_last=True,
                )
            )
        extra = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        return self._instantiate_trainer(trainer_config, extra + platform)

    # --- after the subcommand --------------------------------------------------------------------
    def after_fit(self) -> None:
        if self.pruning is not None and self.pruning.pruned:
            self.exit_code = PRUNED_EXIT_CODE
            for cb in self.trainer.callbacks:
                if isinstance(cb, RunSummary):
                    cb.mark(self.trainer, self.model, status="pruned")
        elif self._section().test_after_fit and not self.trainer.interrupted:
            ckpt = "best" if getattr(self.trainer.checkpoint_callback, "best_model_path", "") else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)
        self._finish_wandb()

    def after_test(self) -> None:
        self._finish_wandb()

    def after_validate(self) -> None:
        self._finish_wandb()

    def _finish_wandb(self) -> None:
        for lg in self.trainer.loggers:
            if isinstance(lg, WandbLogger) and lg._experiment is not None:
                lg.experiment.finish()




#: our own subcommands beside Lightning's, ``name -> fn(argv) -> exit code`` (sweep, compare, ...)
EXTRA_COMMANDS: dict[str, Callable[[list[str]], int]] = {"sweep": sweep_main, "compare": compare_main}


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``lightning_gm`` command (and ``python -m lightning_gm``)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args and args[0] in EXTRA_COMMANDS:
            return EXTRA_COMMANDS[args[0]](args[1:])
        cli = GenerativeCLI(args=argv)  # None: LightningCLI reads sys.argv itself
        return cli.exit_code
    except LightningGMError as exc:
        print(f"lightning_gm: error: {exc}", file=sys.stderr)
        return 1
