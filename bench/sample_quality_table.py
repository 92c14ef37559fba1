r"""One yardstick: sample quality (``fd_lenet``, k-NN precision/recall) of trained models next to their test NLL.

For every ``--ckpt NAME=CLASS=PATH`` the model is loaded with ``CLASS.load_from_checkpoint(PATH,
map_location="cpu")`` (``CLASS`` a :mod:`lightning_gm.models` class name); when that fails (models whose
injected sub-modules, e.g. a PixelCNN likelihood or a GAN generator given by ``class_path``, are not
rebuilt from the saved hyperparameters) it is rebuilt from the run's ``config.yaml`` (next to the
``checkpoints`` folder) with jsonargparse and the checkpoint's ``state_dict`` is loaded into it.

``N`` samples are drawn with ``model.sample(b)`` in batches under ``torch.no_grad()`` after
``torch.manual_seed(seed)``, reshaped and clipped to :math:`[0, 1]` exactly as
:class:`~lightning_gm.callbacks.sample_quality.SampleQuality` does, and compared with a *seeded random
subset* of ``N`` MNIST test images (the test set is ordered by writer population, so a prefix is biased)
through the callback's feature network (:func:`~lightning_gm.nn.classifier.load_feature_network` wrapped
in :class:`~lightning_gm.nn.classifier.FeatureExtractor`), :func:`~lightning_gm.estimators.sample_quality.frechet_metric`
and :func:`~lightning_gm.estimators.sample_quality.precision_recall`.

The real images have the form the model was trained on (read from the run's ``config.yaml``, or set with
``--data NAME=binary|grey``): *binary* = :class:`~lightning_gm.data.MNISTDataModule` with ``binarize:
static`` (one fixed seeded Bernoulli draw of the grey test images, identical to the ``dynamic`` test
split), *grey* = grey levels in :math:`[0, 1]`. For binary-data models whose samples are not binary
(Bernoulli means, e.g. a VAE decoder mean) a second row compares a Bernoulli draw of the same samples
(the callback's ``binarize_samples``). ``--reference`` adds floor rows: a seeded random subset of ``N``
training images of each form against the same test subset.

Prints one markdown table. Usage (from the repository root)::

    OMP_NUM_THREADS=1 nice -n 5 python bench/sample_quality_table.py --reference \
        --ckpt vae=VAE=runs/vae/x/checkpoints/last.ckpt --nll "vae=101.7 (iwae-100)" \
        --ckpt gan=GAN=runs/gan/y/checkpoints/last.ckpt --n gan=5000

References: Heusel et al. (2017), GANs trained by a two time-scale update rule (the Fréchet distance);
Kynkäänniemi et al. (2019), Improved precision and recall metric for assessing generative models.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
import yaml
from torch import Tensor

import lightning_gm.models as models
from lightning_gm.data import MNISTDataModule
from lightning_gm.estimators.sample_quality import frechet_metric, precision_recall
from lightning_gm.models.base import GenerativeModel
from lightning_gm.models.classifier import default_classifier_path
from lightning_gm.nn.classifier import FeatureExtractor, load_feature_network
from run_config import from_run_config

__all__ = ["Entry", "Row", "load_model", "run_config", "data_kind", "real_images", "draw_samples",
           "sample_quality", "markdown_table", "main"]

@dataclass
class Entry:
    """One model to evaluate: its table name, class name, checkpoint and per-model options."""

    name: str
    cls: str
    path: Path
    n: int
    data: Optional[str] = None
    nll: str = "—"
    budget: Optional[str] = None


@dataclass
class Row:
    """One line of the table."""

    model: str
    budget: str
    nll: str
    data: str
    samples: str
    n: int
    fd: float
    precision: float
    recall: float
    seconds: float
    notes: list[str] = field(default_factory=list)


# --- loading ----------------------------------------------------------------------------------------------
def run_config(ckpt: Path) -> Optional[dict[str, Any]]:
    """The ``config.yaml`` of the run a checkpoint belongs to (``<run>/checkpoints/x.ckpt``), or ``None``."""
    cfg = ckpt.parent.parent / "config.yaml"
    return yaml.safe_load(cfg.read_text()) if cfg.is_file() else None


def load_model(cls_name: str, ckpt: Path) -> tuple[GenerativeModel, str]:
    """``(model in eval mode, how it was loaded)``: ``load_from_checkpoint`` first, the run's config second."""
    cls = getattr(models, cls_name, None)
    if cls is None:
        raise SystemExit(f"{cls_name!r} is not a class of lightning_gm.models")
    try:
        return cls.load_from_checkpoint(str(ckpt), map_location="cpu").eval(), "load_from_checkpoint"
    except Exception as exc:  # noqa: BLE001 - any failure falls back to the run's config
        cfg = run_config(ckpt)
        if cfg is None:
            raise
        model = from_run_config(cfg, ckpt)[0]
        if not isinstance(model, cls):
            raise SystemExit(f"{ckpt}: config.yaml builds a {type(model).__name__}, not a {cls_name}") from exc
        why = str(exc).strip().splitlines()[0][:80]
        return model.eval(), f"config.yaml + state_dict (load_from_checkpoint failed: {type(exc).__name__}: {why})"


def data_kind(cfg: Optional[dict[str, Any]]) -> str:
    """``"binary"`` or ``"grey"``: the form of the images the run was trained on."""
    if cfg is None:
        return "grey"
    data = cfg.get("data") or {}
    if "Binarized" in str(data.get("class_path", "")):
        return "binary"
    return "grey" if (data.get("init_args") or {}).get("binarize", "none") == "none" else "binary"


def _budget(cfg: Optional[dict[str, Any]]) -> str:
    max_time = ((cfg or {}).get("trainer") or {}).get("max_time")
    if not max_time:
        return "?"
    d, h, m, s = (int(v) for v in str(max_time).split(":"))
    minutes = d * 1440 + h * 60 + m + s / 60
    return f"{minutes:g} min"


# --- the two image streams ----------------------------------------------------------------------------------
_DATA_CACHE: dict[str, dict[str, Tensor]] = {}


def real_images(kind: str, split: str, n: int, seed: int) -> Tensor:
    """A seeded random subset of ``n`` MNIST images of ``split`` (``"test"`` or ``"train"``), binary (one
    fixed seeded Bernoulli draw, ``binarize: static``) or grey in [0, 1]: ``(n, 784)``."""
    if kind not in _DATA_CACHE:
        dm = MNISTDataModule(binarize="static" if kind == "binary" else "none", flatten=True, download=False)
        dm.prepare_data()
        dm.setup("test")
        _DATA_CACHE[kind] = {s: dm.splits[s][0].float() for s in ("train", "test")}
    x = _DATA_CACHE[kind][split]
    if n > len(x):
        raise SystemExit(f"N={n} is larger than the {split} set ({len(x)} images)")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[perm[:n]]


@torch.no_grad()
def draw_samples(model: GenerativeModel, n: int, batch_size: int, seed: int, ancestral: bool = False) -> Tensor:
    """``n`` samples ``(n, 784)`` clipped to [0, 1] (as the SampleQuality callback does), seeded.

    ``ancestral`` (VAE family only): instead of ``model.sample`` (the likelihood's mean), the likelihood's
    own sample ``model.likelihood.sample(model.decode(z))`` with ``z`` from the prior; with the same seed and
    batch size it consumes the random stream as ``model.sample`` does, so for a PixelCNN likelihood it is the
    binary image whose conditional probabilities ``model.sample`` returns."""
    torch.manual_seed(seed)
    out, done = [], 0
    while done < n:
        b = min(batch_size, n - done)
        if ancestral:
            z = model.prior_top.sample(b, device=model.device).to(model.dtype)
            x = model.likelihood.sample(model.decode(z))
        else:
            x = model.sample(b)
        if x.shape[0] != b or x[0].numel() != 784:
            raise SystemExit(f"{type(model).__name__}.sample({b}) returned shape {tuple(x.shape)}; "
                             f"expected ({b}, 784) or ({b}, 1, 28, 28)")
        out.append(x.detach().float().reshape(b, 784).clamp(0.0, 1.0))
        done += b
    return torch.cat(out)


def _batches(x: Tensor, batch_size: int) -> Iterator[Tensor]:
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size]


@torch.no_grad()
def sample_quality(extractor: FeatureExtractor, real: Tensor, fake: Tensor, k: int = 3,
                   batch_size: int = 500) -> tuple[float, float, float]:
    """``(fd_lenet, precision, recall)`` of ``fake`` against ``real`` (both ``(N, 784)`` in [0, 1]): the
    callback's computation (torchmetrics' Fréchet metric, features collected by a forward hook)."""
    metric = frechet_metric(extractor)
    feats: list[Tensor] = []
    hook = extractor.register_forward_hook(lambda _m, _i, out: feats.append(out.detach().double().cpu()))
    try:
        for x in _batches(real, batch_size):
            metric.update(x, real=True)
        real_f = torch.cat(feats)
        feats.clear()
        for x in _batches(fake, batch_size):
            metric.update(x, real=False)
        fake_f = torch.cat(feats)
    finally:
        hook.remove()
    pr = precision_recall(real_f, fake_f, k=k)
    return float(metric.compute()), pr.precision, pr.recall


# --- the table ------------------------------------------------------------------------------------------
def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as one markdown table."""
    head = ("| model | training budget | test NLL (nats; estimator, subset) | real test images | samples | N | "
            "fd_lenet | precision | recall | sampling s |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.budget} | {r.nll} | {r.data} | {r.samples} | {r.n:,} | {r.fd:.2f} | "
                     f"{r.precision:.3f} | {r.recall:.3f} | {r.seconds:.1f} |")
    return "\n".join(lines)


def _keyed(values: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, rest = v.partition("=")
        if not sep:
            raise SystemExit(f"{what} must be NAME=VALUE, got {v!r}")
        out[key] = rest
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", action="append", default=[], metavar="NAME=CLASS=PATH",
                   help="a model: table name, lightning_gm.models class name, checkpoint path (repeatable)")
    p.add_argument("--num-samples", type=int, default=10000, help="N (samples and test images) per model")
    p.add_argument("--n", action="append", default=[], metavar="NAME=N", help="N for one model (e.g. a slow sampler)")
    p.add_argument("--nll", action="append", default=[], metavar="NAME=TEXT",
                   help="the test NLL text shown for a model (estimator and subset included)")
    p.add_argument("--budget", action="append", default=[], metavar="NAME=TEXT",
                   help="training budget shown for a model (else trainer.max_time of its config.yaml)")
    p.add_argument("--data", action="append", default=[], metavar="NAME=binary|grey",
                   help="form of the real images for a model (else read from its config.yaml)")
    p.add_argument("--ancestral", action="append", default=[], metavar="NAME",
                   help="VAE-family model: add a row of its likelihood's own binary samples "
                        "(likelihood.sample(decode(z)); for a PixelCNN decoder the true pixel-by-pixel draw)")
    p.add_argument("--reference", action="store_true",
                   help="add floor rows: N training images (binary and grey) against the test subsets")
    p.add_argument("--classifier", default=str(default_classifier_path()), help="feature network file "
                   "(the SampleQuality callback's: <data root>/classifiers/lenet_mnist.pt)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples, the Bernoulli draws and the subsets")
    p.add_argument("--batch-size", type=int, default=500, help="samples drawn (and images featurised) at a time")
    p.add_argument("--k", type=int, default=3, help="neighbour rank of the precision/recall manifold radii")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Evaluate every ``--ckpt`` and print the markdown table (progress goes to stderr)."""
    args = parse_args(argv)
    ns, nlls, budgets, kinds = (_keyed(args.n, "--n"), _keyed(args.nll, "--nll"), _keyed(args.budget, "--budget"),
                                _keyed(args.data, "--data"))
    entries = []
    for spec in args.ckpt:
        parts = spec.split("=", 2)
        if len(parts) != 3:
            raise SystemExit(f"--ckpt must be NAME=CLASS=PATH, got {spec!r}")
        name, cls, path = parts
        entries.append(Entry(name, cls, Path(path), int(ns.get(name, args.num_samples)), kinds.get(name),
                             nlls.get(name, "—"), budgets.get(name)))
    net, _ = load_feature_network(args.classifier)
    extractor = FeatureExtractor(net)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    rows: list[Row] = []
    if args.reference:
        for kind in ("binary", "grey"):
            n = args.num_samples
            real = real_images(kind, "test", n, args.seed)
            ref = real_images(kind, "train", n, args.seed + 1)
            fd, prec, rec = sample_quality(extractor, real, ref, args.k, args.batch_size)
            rows.append(Row(f"reference: MNIST training images ({kind})", "—", "—", kind, "train subset", n,
                            fd, prec, rec, 0.0))
            log(f"reference {kind}: fd={fd:.3f} p={prec:.3f} r={rec:.3f}")
    for e in entries:
        model, how = load_model(e.cls, e.path)
        cfg = run_config(e.path)
        kind = e.data or data_kind(cfg)
        log(f"{e.name}: {type(model).__name__} via {how}; data {kind}; N={e.n}")
        t0 = time.perf_counter()
        fake = draw_samples(model, e.n, args.batch_size, args.seed)
        secs = time.perf_counter() - t0
        real = real_images(kind, "test", e.n, args.seed)
        binary = bool(((fake == 0) | (fake == 1)).all())
        variants = [("as returned (binary)" if binary else "as returned", fake)]
        if kind == "binary" and not binary:
            g = torch.Generator().manual_seed(args.seed + 2)
            variants.append(("Bernoulli draw", torch.bernoulli(fake, generator=g)))
        if e.name in args.ancestral:
            t1 = time.perf_counter()
            anc = draw_samples(model, e.n, args.batch_size, args.seed, ancestral=True)
            variants.append(("likelihood.sample (ancestral binary)", anc))
            log(f"{e.name}: ancestral samples in {time.perf_counter() - t1:.1f}s")
        for label, x in variants:
            fd, prec, rec = sample_quality(extractor, real, x, args.k, args.batch_size)
            rows.append(Row(e.name, e.budget or _budget(cfg), e.nll, kind, label, e.n, fd, prec, rec, secs))
            log(f"{e.name} [{label}]: fd={fd:.3f} p={prec:.3f} r={rec:.3f} (sampling {secs:.1f}s)")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
