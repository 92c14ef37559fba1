"""The ``lightning_gm`` command's front door: help, early checks and dispatch, without importing torch or Lightning.

``lightning_gm --help``, ``lightning_gm fit --help`` and the mistakes that can be seen without the models' signatures
(a config file that is missing, empty or not YAML; a checkpoint that is missing or not a checkpoint file; an unknown
command) are answered here in a fraction of a second, in one line naming the file. Only then is the Lightning
command (:mod:`lightning_gm.cli`) imported; ``sweep`` and ``compare`` are imported on their own.

Exit codes: 0 done, 1 an error of the platform (one ``lightning_gm: error:`` line), 2 a configuration or
command-line error, 3 a sweep trial that its pruner stopped, 130 / 143 stopped by SIGINT / SIGTERM.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Optional

from lightning_gm import signals

__all__ = ["main", "COMMANDS", "check_config_file", "check_checkpoint", "model_choices", "data_choices"]

PACKAGE = Path(__file__).resolve().parent
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
#: every command with its one-line description (the top-level help)
COMMANDS: dict[str, str] = {
    "fit": "train a model from a config in its own run folder, then test its best checkpoint",
    "validate": "evaluate a run's checkpoint on the validation set",
    "test": "evaluate a run's checkpoint on the test set (test/nll with the estimator behind it)",
    "predict": "run a checkpoint's predict step over the test set",
    "sweep": "run an Optuna hyperparameter study over a config (sweeps/*.yaml), one fit per trial",
    "compare": "leaderboard of every run below a folder: an HTML dashboard and a terminal table",
}
_SPECIAL_CKPT = ("last", "best", "hpc", "null", "none", "")


class CommandError(Exception):
    """A mistake on the command line, reported as one line with exit code 2."""


def _top_help() -> str:
    width = max(map(len, COMMANDS))
    lines = "\n".join(f"  {name.ljust(width)}  {text}" for name, text in COMMANDS.items())
    return f"""usage: lightning_gm COMMAND [options]

lightning_gm: train, test and compare explicit-density generative models (RBMs, DBNs, DBMs, VAEs, flows, ...)
on the same data, each test log-likelihood labelled with how it was obtained.

commands:
{lines}

Each command has its own help: lightning_gm fit --help. Runs go to runs/<experiment>/<run>/ (config.yaml,
checkpoints/, metrics.csv, samples/, summary.json). A first run, about a minute on a CPU:
  lightning_gm fit --config conf/vae_digits.yaml
"""


def _first_line(doc: Optional[str], width: int = 92) -> str:
    """The first sentence of a docstring as plain text (reST roles and literals unwrapped), cut to ``width``."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = re.sub(r":\w+:`~?(?:[\w.]*\.)?([^`]+)`", r"\1", text).replace("``", "")
    end = re.search(r"(?<!\bal)(?<!e\.g)(?<!i\.e)\.(\s|$)", text)
    text = text[: end.start() + 1] if end else text
    return (text if len(text) <= width else text[: width - 3].rstrip() + "...") or "-"


def _classes(package: str, skip: tuple[str, ...]) -> list[tuple[str, str]]:
    """The classes ``lightning_gm.<package>`` exports, with the first sentence of their docstring, read from
    the source files (nothing is imported: this is the help page of a command that must answer at once)."""
    init = PACKAGE / package / "__init__.py"
    out: list[tuple[str, str]] = []
    for node in ast.parse(init.read_text()).body:
        if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(f"lightning_gm.{package}."):
            continue
        module = PACKAGE.parent.joinpath(*node.module.split("."))
        source = module.with_suffix(".py") if module.with_suffix(".py").is_file() else module / "__init__.py"
        classes = {n.name: n for n in ast.parse(source.read_text()).body if isinstance(n, ast.ClassDef)}
        for alias in node.names:
            cls = classes.get(alias.name)
            if cls is None or alias.name in skip or alias.name.endswith("Error"):
                continue
            out.append((alias.name, _first_line(ast.get_docstring(cls))))
    return out


def model_choices() -> list[tuple[str, str]]:
    """``(class name, one line)`` of every model ``--model=NAME`` accepts."""
    return _classes("models", skip=("GenerativeModel", "LinearGaussianModel"))


def data_choices() -> list[tuple[str, str]]:
    """``(class name, one line)`` of every data module ``--data=NAME`` accepts."""
    return _classes("data", skip=("GenerativeDataModule", "ImageDataModule"))


def _command_help(command: str) -> str:
    what = {
        "fit": "Train a model in a run folder, runs/<experiment>/<run>/, then test its best checkpoint.",
        "validate": "Evaluate a checkpoint on the validation set; the results are added to its run folder.",
        "test": "Evaluate a checkpoint on the test set; the results are added to its run folder, whose config.yaml "
                "is left as it is (this test's configuration is saved beside it as test-<time>.yaml).",
        "predict": "Run a checkpoint's predict step over the test set.",
    }[command]
    ckpt = ("--ckpt_path last       resume the run in the config's run folder from its last.ckpt"
            if command == "fit" else
            "--ckpt_path PATH|best|last  the checkpoint (default: the run folder's best checkpoint)")
    fit_only = ("  --test_after_fit BOOL  test the best checkpoint after training (default: true)\n"
                if command == "fit" else "")
    models = "\n".join(f"  {n:<18} {t}" for n, t in model_choices())
    data = "\n".join(f"  {n:<26} {t}" for n, t in data_choices())
    example = ("lightning_gm fit --config conf/vae_digits.yaml --trainer.max_epochs=5" if command == "fit" else
               f"lightning_gm {command} --config runs/vae/<run>/config.yaml")
    return f"""usage: lightning_gm {command} --config CONFIG.yaml [--KEY=VALUE ...]

{what}
Example: {example}

options of lightning_gm:
  -c, --config FILE      a config (conf/*.yaml, or a run's config.yaml); several are merged in order
  --KEY=VALUE            any key of the config: --trainer.max_epochs=5 --model.init_args.latent_dim=20
  --experiment NAME      the group of runs (default: the first config file's name)
  --run_name NAME        the run's folder (default: a timestamp)
  --runs_dir DIR         the root of all runs (default: runs)
  --tags [A,B]           tags of the run (W&B and summary.json)
{fit_only}  {ckpt}
  --print_config         print the resolved configuration and exit

models (--model=NAME or model.class_path; the options of one: lightning_gm {command} --model.help NAME):
{models}

data (--data=NAME or data.class_path; the options of one: lightning_gm {command} --data.help NAME):
{data}

trainer: every option of Lightning's Trainer, e.g. --trainer.max_epochs, --trainer.max_time=00:01:00:00,
--trainer.devices, --trainer.limit_test_batches. All options of this command: lightning_gm {command} --help-all
"""


# ---------------------------------------------------------------------------------------------- early checks
def _values(args: list[str], *names: str) -> list[str]:
    """The values given to the options ``names`` (``--name value`` or ``--name=value``), in order."""
    out = []
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                out.append(args[i + 1])
            elif arg.startswith(name + "="):
                out.append(arg[len(name) + 1:])
    return out


def check_config_file(value: str) -> Optional[dict]:
    """Read a ``--config`` file as the command will: a clear :class:`CommandError` (file and line) when it is
    missing, empty, not YAML or not a mapping. A value that is not a file name (an inline YAML string, which
    jsonargparse accepts) is left to the parser (``None``)."""
    import yaml

    path = Path(value)
    if not path.is_file():
        if path.suffix.lower() in (".yaml", ".yml", ".json") or os.sep in value:
            raise CommandError(f"config file {value} not found" + (" (it is a folder)" if path.is_dir() else ""))
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise CommandError(f"config file {value} is not a text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CommandError(f"config file {value}{where}: not valid YAML: {problem}") from None
    if data is None:
        raise CommandError(f"config file {value} is empty: a config sets at least model: and data: "
                           "(see conf/vae_digits.yaml)")
    if not isinstance(data, dict):
        raise CommandError(f"config file {value} must be a mapping of keys (trainer:, model:, data:, ...), "
                           f"got a {type(data).__name__}")
    return data


def check_checkpoint(value: str, where: str = "--ckpt_path") -> None:
    """A checkpoint path must name a file that ``torch.save`` wrote (a zip archive holding ``data.pkl``):
    checked here without torch, so a missing or garbage file is one line, before anything starts."""
    if str(value).lower() in _SPECIAL_CKPT or str(value).startswith("registry:"):
        return
    path = Path(value)
    if not path.exists():
        raise CommandError(f"{where} {value}: no such checkpoint file")
    if path.is_dir():
        raise CommandError(f"{where} {value} is a folder: give a .ckpt file (a run's are in "
                           "<run>/checkpoints/), or 'last' / 'best' with --config <run>/config.yaml")
    try:
        with zipfile.ZipFile(path) as archive:
            ok = any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        ok = False
    if not ok:
        raise CommandError(f"{where} {value} is not a checkpoint (not a file written by torch.save / Lightning; "
                           "truncated or another format?)")


#: keys the command adds to every Lightning subcommand (lightning_gm.cli.GenerativeCLI)
_PLATFORM_KEYS = {"config", "print_config", "seed_everything", "trainer", "model", "data", "experiment", "run_name",
                  "runs_dir", "tags", "test_after_fit"}


def _trainer_signature(method: str) -> Optional[set[str]]:
    """The parameters of Lightning's ``Trainer.<method>``, read from its installed source (not imported), or
    ``None`` when they cannot be read with certainty (then the full parser decides)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("lightning")
        source = Path(spec.origin).parent / "pytorch" / "trainer" / "trainer.py"  # type: ignore[union-attr, arg-type]
        tree = ast.parse(source.read_text())
    except (ImportError, AttributeError, TypeError, OSError, SyntaxError):
        return None
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer"), None)
    fn = next((n for n in getattr(cls, "body", []) if isinstance(n, ast.FunctionDef) and n.name == method), None)
    if fn is None or fn.args.kwarg is not None:
        return None
    return {a.arg for a in fn.args.args + fn.args.kwonlyargs} - {"self"}


def _check_keys(command: str, files: list[tuple[str, dict]], args: list[str]) -> None:
    """Unknown top-level and ``trainer.`` keys, in the config files and on the command line, as one line naming
    the file (these need only Lightning's Trainer signature, read from its source; the models' keys are checked
    by the full parser)."""
    import difflib

    trainer, method = _trainer_signature("__init__"), _trainer_signature(command)
    if trainer is None or method is None:
        return
    top = _PLATFORM_KEYS | (method - {"model", "datamodule", "train_dataloaders", "val_dataloaders", "dataloaders"})

    def unknown(key: str, where: str) -> None:
        parts = key.split(".")
        name, known, prefix = (parts[0], top, "") if parts[0] != "trainer" or len(parts) < 2 else (
            parts[1], trainer, "trainer.")
        if name.rstrip("+") in known:
            return
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
        raise CommandError(f"{where}{prefix}{name} is not an option of lightning_gm {command}{hint}")

    for path, data in files:
        for key, value in data.items():
            unknown(str(key), f"{path}: ")
            if key == "trainer" and isinstance(value, dict):
                for sub in value:
                    unknown(f"trainer.{sub}", f"{path}: ")
    for arg in args:
        key = arg[2:].split("=", 1)[0]
        if arg.startswith("--") and key and not key.startswith("help") and not key.endswith(".help"):
            unknown(key, "")


def _early_checks(command: str, args: list[str]) -> None:
    ckpt: Optional[str] = None
    files = []
    for value in _values(args, "-c", "--config"):
        data = check_config_file(value)
        if data is not None:
            files.append((value, data))
        if data is not None and data.get("ckpt_path") not in (None, ""):
            ckpt, source = str(data["ckpt_path"]), f"ckpt_path in {value}:"
    _check_keys(command, files, args)
    given = _values(args, "--ckpt_path")
    if given:
        ckpt, source = given[-1], "--ckpt_path"
    if ckpt is not None:
        check_checkpoint(ckpt, source)


# ---------------------------------------------------------------------------------------------- the console
def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings as one line each, without the source line: ``lightning_gm: warning: <message>``."""
    text = " ".join(str(message).split())
    (file or sys.stderr).write(f"lightning_gm: warning: {text}\n")


def quiet_console() -> None:
    """Keep the other libraries' tips and deprecation notices off the console (their warnings that matter are
    shown, one line each); W&B prints where its run is and nothing else unless the user asked for more."""
    warnings.showwarning = _one_line_warning
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    for pattern in (r"Checkpoint directory .* exists and is not empty", r".*does not have many workers",
                    r"The number of training batches .* is smaller than the logging interval",
                    r"LightningCLI's args parameter is intended to run from within Python"):
        warnings.filterwarnings("ignore", message=pattern)
    os.environ.setdefault("WANDB_QUIET", "true")
    os.environ.setdefault("WANDB_DISABLE_CODE", "true")


# ---------------------------------------------------------------------------------------------- dispatch
def _extra(name: str) -> Callable[[list[str]], int]:
    if name == "sweep":
        from lightning_gm.sweep import main as sweep_main

        return sweep_main
    from lightning_gm.dashboard import main as compare_main

    return compare_main


def _run(args: list[str], console: bool = True) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(_top_help(), end="")
        return 0
    command = args[0]
    if command.startswith("-"):  # LightningCLI's own form, e.g. `lightning_gm --config base.yaml fit ...`
        if console:
            quiet_console()
        from lightning_gm.cli import run

        return run(args)
    if command in ("sweep", "compare"):
        return _extra(command)(args[1:])
    if command not in LIGHTNING_COMMANDS:
        known = ", ".join(COMMANDS)
        raise CommandError(f"unknown command {command!r}; the commands are {known} (lightning_gm --help)")
    rest = args[1:]
    if any(a in ("-h", "--help") for a in rest):
        print(_command_help(command), end="")
        return 0
    args = [command] + ["--help" if a == "--help-all" else a for a in rest]
    _early_checks(command, args[1:])
    if console:
        quiet_console()
    from lightning_gm.cli import run

    return run(args)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``lightning_gm`` command (and ``python -m lightning_gm``); returns the exit code.
    Called with ``argv`` (from Python, e.g. a test), it leaves the process's warning filters as they are."""
    from lightning_gm.errors import LightningGMError

    args = list(sys.argv[1:] if argv is None else argv)
    prog = "lightning_gm" + (f" {args[0]}" if args and not args[0].startswith("-") else "")
    signals.install()
    try:
        return _run(args, console=argv is None)
    except CommandError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except LightningGMError as exc:
        print(f"lightning_gm: error: {exc}", file=sys.stderr)
        return 1
    except signals.Stopped as exc:
        print(f"lightning_gm: stopped by {signals.signal_name(exc.signum)}", file=sys.stderr)
        return signals.exit_code(signals.signal_name(exc.signum))
    finally:
        signals.restore()
