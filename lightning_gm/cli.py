"""The ``lightning_gm`` Lightning commands (``fit / validate / test / predict``): a LightningCLI with run folders.

Every run lives in one folder, ``<runs_dir>/<experiment>/<run_name>/``::

    config.yaml        the resolved configuration of the fit (re-test or resume with --config)
    test-<time>.yaml   the resolved configuration of each later command (test, validate, predict)
    checkpoints/       best-epoch=NNN.ckpt (by the model's monitor) and last.ckpt (the last state)
    metrics.csv        every logged metric (CSV logger)
    samples/           sample and reconstruction pictures
    summary.json       final numbers, the test estimator, wall time, and the history of commands
    wandb/             the W&B run (offline unless WANDB_API_KEY is set; `wandb sync` later)

``experiment`` defaults to the name of the first config file on the command line (``conf/iwae.yaml`` -> ``iwae``,
even though it includes ``conf/vae.yaml``), ``run_name`` to a timestamp. ``fit`` writes the folder; later
commands only add to it. A command that fails before its loop starts (bad data, a checkpoint that does not load)
leaves nothing behind. The entry point is :func:`lightning_gm.command.main`, which answers help and early errors
without importing this module.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger

from lightning_gm import signals
from lightning_gm.callbacks import DivergenceGuard, RNGStateCheckpoint, RunSummary
from lightning_gm.callbacks.checkpoint import LastCheckpoint, best_checkpoint
from lightning_gm.callbacks.console import OneLineSummary, progress_callback
from lightning_gm.callbacks.pruning import PRUNED_EXIT_CODE, TRIAL_ENV, OptunaPruning
from lightning_gm.callbacks.summary import SUMMARY_FILE, format_test_table, read_summary, write_json_atomic
from lightning_gm.cli_checkpoint import CheckpointArguments, is_rank_zero
from lightning_gm.command import main
from lightning_gm.data.modules import GenerativeDataModule
from lightning_gm.errors import ConfigError, LightningGMError
from lightning_gm.loggers import new_wandb_id, wandb_needs_offline
from lightning_gm.parser import (
    GenerativeArgumentParser,
    SaveResolvedConfig,
    condense_error,
    count_before_fraction,
    register_resolvers,
)

__all__ = ["GenerativeCLI", "main", "run"]

RUN_NAME_ENV = "LIGHTNING_GM_RUN_NAME"
_LOGGER_DIRS = {
    "CSVLogger": {"name": "", "version": ""},
    "TensorBoardLogger": {"name": "tensorboard", "version": ""},
}
#: Lightning's console messages that say nothing a user of this command needs (its tips, the hardware probe
#: the one-line summary repeats, checkpoint-loading chatter, its own interruption lines, which ours replace)
_LIGHTNING_NOISE = re.compile(
    r"^(💡 Tip|Seed set to|(GPU|TPU|HPU|IPU) available|LOCAL_RANK: \d+ - |The following callbacks returned in "
    r"`LightningModule.configure_callbacks`|Trainer already configured with model summary|Restoring states from "
    r"the checkpoint|Restored all states from the checkpoint|Loaded model weights from the checkpoint"
    r"|\s*Detected KeyboardInterrupt|(\[rank: \d+\] )?Received SIGTERM|An \w+ was raised with message)")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _LIGHTNING_NOISE.match(str(record.getMessage()))


for _name in ("lightning.pytorch", "lightning.fabric"):
    for _handler in logging.getLogger(_name).handlers:
        _handler.addFilter(_DropNoise())


def _relative(path: str) -> str:
    """``path`` relative to the working folder when it is below it (what a person would type)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class GenerativeCLI(CheckpointArguments, LightningCLI):
    """LightningCLI in ``omegaconf+`` mode, subclass mode for ``model`` and ``data``, with run folders.

    How configs compose (all of it jsonargparse's own parsing, see the README, "Configs"):

    * a ``config: other.yaml`` key inside a config file applies that file (its path relative to the including
      file) at that point; the keys after it override it, as flat dotted keys (``trainer.max_epochs: 7``) for a
      group the included file sets (a nested ``trainer:`` block there would replace the whole group);
    * ``omegaconf+`` resolves ``${...}`` interpolations once, on the merged configuration after the command line,
      so ``total_iters: ${trainer.max_epochs}`` follows ``--trainer.max_epochs=7``; absolute keys written in a file
      are read relative to the subcommand (``omegaconf_absolute_to_relative_paths``), as a user writes them;
    * the run folder's ``config.yaml`` is the resolved result: numbers, no ``config:`` key, no interpolation.
    """

    def __init__(self, args: Any = None, run: bool = True) -> None:
        self.exit_code = 0
        self.pruning: Optional[OptunaPruning] = None
        self.summary: Optional[RunSummary] = None
        self.run_dir: Optional[Path] = None
        self.created_run_dir = False
        self._existing: set[str] = set()
        argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        GenerativeArgumentParser.command_line = argv
        GenerativeArgumentParser.config_files = [
            argv[i + 1] if a in ("-c", "--config") and i + 1 < len(argv) else a.split("=", 1)[1]
            for i, a in enumerate(argv) if a in ("-c", "--config") or a.startswith("--config=")]
        # `${trainer.max_epochs}` in conf/x.yaml means fit.trainer.max_epochs (the subcommand's), not a root key
        set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
        register_resolvers()  # ${sum:...} in the configs
        super().__init__(
            # any LightningModule: the generative families (GenerativeModel) and the feature network
            # of the sample-quality metrics (models.MNISTClassifier) train through the same command
            model_class=LightningModule,
            datamodule_class=GenerativeDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_kwargs={"parser_mode": "omegaconf+", "prog": "lightning_gm"},
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
        count_before_fraction(parser)

    def instantiate_classes(self) -> None:
        """Build model, data and trainer; a value a class rejects becomes one ConfigError message."""
        try:
            super().instantiate_classes()
        except LightningGMError:
            raise
        except (ValueError, TypeError) as exc:
            detail = "\n".join(ln for ln in condense_error(str(exc)).splitlines() if not ln.strip().startswith("Given value"))
            raise ConfigError(f"the configuration could not be built:\n{detail.strip()}") from exc
        self._refuse_trainer_clipping_for_manual_loop()

    def _refuse_trainer_clipping_for_manual_loop(self) -> None:
        """A family with the manual loop (``ManualLoop``) clips its own gradients (``model.init_args.gradient_clip_val``)
        and does not accumulate them: refuse the trainer's settings with a message that says where they go."""
        model, trainer = getattr(self, "model", None), getattr(self, "trainer", None)
        if trainer is None or not getattr(model, "manual_loop", False):
            return
        if trainer.gradient_clip_val:
            raise ConfigError(
                f"trainer.gradient_clip_val={trainer.gradient_clip_val}: {type(model).__name__} trains with a manual "
                "optimisation step, which Lightning does not clip; set model.init_args.gradient_clip_val (and "
                "model.init_args.gradient_clip_algorithm) instead")
        if trainer.accumulate_grad_batches != 1:
            raise ConfigError(
                f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches}: {type(model).__name__} trains "
                "with a manual optimisation step, which does not accumulate gradients; raise data.init_args.batch_size "
                "instead")

    # --- the run folder ------------------------------------------------------------------------
    def _section(self) -> Namespace:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        cfg = self._section()
        self._adopt_checkpoint_run(cfg)
        if not cfg.experiment:
            # the file the user named, not one it includes (cfg.config lists an included file before its includer)
            files = GenerativeArgumentParser.config_files or [str(f) for f in cfg.get("config") or []]
            cfg.experiment = Path(str(files[0])).stem if files else "default"
        if not cfg.run_name:
            inherited = os.environ.get(RUN_NAME_ENV) if os.environ.get("LOCAL_RANK", "0") != "0" else None
            cfg.run_name = inherited or self._fresh_run_name(Path(cfg.runs_dir) / cfg.experiment)
        os.environ[RUN_NAME_ENV] = cfg.run_name  # DDP re-launches this command line: share the name
        self.run_dir = Path(cfg.runs_dir) / cfg.experiment / cfg.run_name
        self.created_run_dir = not self.run_dir.exists()
        self._existing = self._entries()
        cfg.trainer.default_root_dir = str(self.run_dir)
        command = self.subcommand or "fit"
        self.config_file = "config.yaml" if command == "fit" else f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
        self.save_config_kwargs["config_filename"] = self.config_file
        if self.subcommand:
            self._resolve_checkpoint(cfg)
        self._place_loggers(cfg)

    def _adopt_checkpoint_run(self, cfg: Namespace) -> None:
        """``test`` / ``validate`` / ``predict`` of a run's checkpoint without a ``--config`` naming the experiment
        (``--model=VAE --ckpt_path runs/vae/a/checkpoints/last.ckpt``) work in that run's folder, as ``--config
        runs/vae/a/config.yaml`` would, instead of a new ``runs/default/<time>``."""
        files = GenerativeArgumentParser.config_files or cfg.get("config")
        ckpt = cfg.get("ckpt_path")
        if self.subcommand in (None, "fit") or files or cfg.experiment or cfg.run_name or not ckpt:
            return
        folder = Path(str(ckpt)).resolve().parent
        run = folder.parent
        if folder.name == "checkpoints" and Path(str(ckpt)).is_file() and (run / SUMMARY_FILE).is_file():
            runs_dir = os.path.relpath(run.parent.parent)
            cfg.runs_dir = str(run.parent.parent) if runs_dir.startswith("..") else runs_dir
            cfg.experiment, cfg.run_name = run.parent.name, run.name

    def _entries(self) -> set[str]:
        """The run folder's entries (and its W&B folder's): what a failed start must not remove."""
        if self.run_dir is None or not self.run_dir.is_dir():
            return set()
        wandb = self.run_dir / "wandb"
        return {p.name for p in self.run_dir.iterdir()} | (
            {f"wandb/{p.name}" for p in wandb.iterdir()} if wandb.is_dir() else set())

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
                if lg.class_path == "lightning.pytorch.loggers.WandbLogger":
                    lg.class_path = "lightning_gm.loggers.WandbLogger"  # same logger, quiet and resumable
                args.name = cfg.run_name
                args.group = args.get("group") or cfg.experiment
                if self.subcommand == "fit":
                    args.job_type = "fit"
                args.tags = sorted(set(args.get("tags") or []) | set(cfg.tags or []))
                # one W&B run per run folder: every later command (a test, a resumed fit) continues it
                args.id = args.get("id") or read_summary(self.run_dir).get("wandb_id") or new_wandb_id()
                if wandb_needs_offline():
                    os.environ["WANDB_MODE"] = "offline"
            for k, v in _LOGGER_DIRS.get(kind, {}).items():
                args[k] = v
            lg.init_args = args
        cfg.trainer.logger = loggers

    def instantiate_trainer(self, **kwargs: Any):  # type: ignore[override]
        from lightning_gm.callbacks.registry import callbacks_for

        cfg = self._section()
        self.summary = RunSummary(str(self.run_dir), cfg.experiment, cfg.run_name, tags=list(cfg.tags or []),
                                  command=self.subcommand or "fit", config_file=self.config_file)
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        configured = trainer_config.get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        platform = [DivergenceGuard(), RNGStateCheckpoint(), self.summary,
                    *callbacks_for(self.model, configured)]  # what the model declares: evaluations, schedule progress
        trial = os.environ.get(TRIAL_ENV)
        self.pruning = OptunaPruning.from_env(trial) if trial and self.subcommand == "fit" else None
        if self.pruning is not None:
            platform.append(self.pruning)
        if not any(isinstance(c, ModelCheckpoint) for c in configured):
            folder = str(self.run_dir / "checkpoints")
            platform += [best_checkpoint(folder, getattr(self.model, "monitor", None),
                                         getattr(self.model, "monitor_mode", "min")),
                         LastCheckpoint(folder)]
        if trainer_config.get("enable_progress_bar") is not False and not any(
                isinstance(c, ProgressBar) for c in configured):
            platform.append(progress_callback())
        if trainer_config.get("enable_model_summary") is not False and not any(
                isinstance(c, ModelSummary) for c in configured):
            platform.append(OneLineSummary())
        trainer_config["enable_autolog_hparams"] = False  # the resolved config is logged once, nested
        extra = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        return self._instantiate_trainer(trainer_config, extra + platform)

    # --- before and after the subcommand ----------------------------------------------------------
    def _preflight(self, stage: str) -> None:
        """Read the data before any logger, W&B run or file is created: a missing or broken data file is then
        a failed start that leaves nothing behind."""
        if is_rank_zero() and self.datamodule is not None:
            self.datamodule.prepare_data()
            self.datamodule.setup(stage)

    def _announce(self, what: str) -> None:
        if is_rank_zero():
            print(f"lightning_gm {self.subcommand}: {what}", flush=True)

    def before_fit(self) -> None:
        self._preflight("fit")
        ckpt = self._section().get("ckpt_path")
        self._announce(f"run folder {self.run_dir}" + (f", resuming from {ckpt}" if ckpt else ""))

    def before_test(self) -> None:
        self._preflight("test")
        self._announce(f"run folder {self.run_dir}, checkpoint {self._section().get('ckpt_path') or '(none: the model as built)'}")

    def before_validate(self) -> None:
        self._preflight("validate")
        self._announce(f"run folder {self.run_dir}, checkpoint {self._section().get('ckpt_path') or '(none)'}")

    def before_predict(self) -> None:
        self._preflight("predict")

    def test(self, model: Any, datamodule: Any = None, verbose: bool = True, **kwargs: Any) -> Any:
        """``trainer.test`` with the platform's table (estimator first) instead of Lightning's."""
        return self.trainer.test(model, datamodule=datamodule, verbose=False, **kwargs)

    def after_fit(self) -> None:
        if self.pruning is not None and self.pruning.pruned:
            self.exit_code = PRUNED_EXIT_CODE
            if self.summary is not None:
                self.summary.mark(self.trainer, self.model, status="pruned")
        elif self._section().test_after_fit and not self.trainer.interrupted:
            best = getattr(self.trainer.checkpoint_callback, "best_model_path", "") or None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best, verbose=False)
            self._print_test()
        self._finish_wandb()

    def after_test(self) -> None:
        self._print_test()
        self._finish_wandb()

    def after_validate(self) -> None:
        self._finish_wandb()

    def _print_test(self) -> None:
        if not self.trainer.is_global_zero or self.run_dir is None:
            return
        summary = read_summary(self.run_dir)
        if summary.get("test"):
            ckpt = summary.get("tested_checkpoint")
            ckpt = _relative(ckpt) if ckpt else "the model as built"
            print(f"\nTest of {self.run_dir} ({ckpt}):\n{format_test_table(summary)}", flush=True)

    def _finish_wandb(self) -> None:
        for lg in self.trainer.loggers:
            if isinstance(lg, WandbLogger) and lg._experiment is not None:
                lg.experiment.finish()

    # --- when the command does not end normally ------------------------------------------------------
    def stopped(self, exc: BaseException) -> int:
        """Settle a command that ended in an exception: a failed start leaves nothing behind; an interruption
        (SIGINT, SIGTERM) is recorded, said in one line with the way to resume, and becomes the exit code
        128 + signal; anything else is re-raised (after the clean-up) for the entry point to report."""
        sig = signals.stop_signal_of(exc) or (signals.received() if isinstance(exc, SystemExit) else None)
        if isinstance(exc, SystemExit) and self.summary is not None:
            sig = sig or self.summary.stop_signal  # Lightning turns a Ctrl-C into sys.exit(1) after recording it
        if isinstance(exc, SystemExit) and sig is None:
            raise exc  # the parser's own exit (help, --print_config, a bad option)
        started = self.summary is not None and self.summary.started
        self._close_wandb(signals.exit_code(sig) if sig else 1)
        if not started:
            self._remove_failed_start()
        if sig is None:
            if not started and not isinstance(exc, LightningGMError):
                unloadable = self._unloadable_checkpoint(exc)
                if unloadable is not None:
                    raise unloadable from exc
            raise exc
        if not is_rank_zero():
            return signals.exit_code(sig)
        if not started:
            print(f"lightning_gm {self.subcommand}: stopped by {sig} before the run started; nothing was written",
                  file=sys.stderr)
            return signals.exit_code(sig)
        print(f"lightning_gm {self.subcommand}: {self._stop_message(sig)}", file=sys.stderr, flush=True)
        return signals.exit_code(sig)

    def _stop_message(self, sig: str) -> str:
        assert self.run_dir is not None
        summary = read_summary(self.run_dir)
        last = self.run_dir / "checkpoints" / "last.ckpt"
        entry = (summary.get("history") or [{}])[-1]
        if self.subcommand == "fit" and entry.get("command") == "fit":
            summary["last_checkpoint"] = str(last) if last.is_file() else None
            write_json_atomic(self.run_dir / "summary.json", summary)
            where = entry.get("error", f"stopped by {sig}").replace("stopped by ", "")
            if last.is_file():
                return (f"stopped by {where}; {last} holds the last state. Resume with: lightning_gm fit --config "
                        f"{self.run_dir / 'config.yaml'} --ckpt_path last")
            return f"stopped by {where}, before the first training step: no checkpoint was written"
        return (f"{entry.get('command', self.subcommand)} stopped by {sig}; the run's status and earlier results in "
                f"{self.run_dir / 'summary.json'} are unchanged")

    def _remove_failed_start(self) -> None:
        """Remove what this command created before its loop started: the whole run folder if it is new, else
        the entries it added (its config file, its W&B files)."""
        if self.run_dir is None or not self.run_dir.exists() or not is_rank_zero():
            return
        if self.created_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        for name in sorted(self._entries() - self._existing):
            path = self.run_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    @staticmethod
    def _close_wandb(code: int) -> None:
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.run.finish(exit_code=code)


def run(args: Optional[list[str]] = None) -> int:
    """Run one Lightning command (``fit ...``, ``test ...``) and return its exit code; used by
    :func:`lightning_gm.command.main` after its early checks."""
    cli = GenerativeCLI.__new__(GenerativeCLI)  # bound before __init__ runs the command, to settle its failure
    try:
        GenerativeCLI.__init__(cli, args=args)
    except BaseException as exc:  # noqa: BLE001 (settled or re-raised by `stopped`)
        return cli.stopped(exc)
    return cli.exit_code
