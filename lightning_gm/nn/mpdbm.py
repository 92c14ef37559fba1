r"""Masked mean-field inference in binary DBMs (optionally with a softmax label group): the maths of the
multi-prediction DBM and of DBM inpainting, in plain torch.

The model is the binary DBM of :class:`~lightning_gm.nn.dbm.BinaryDBM` with, optionally, a one-hot label
:math:`y \in \{e_1, \dots, e_C\}` attached to the top hidden layer :math:`h_L` by weights :math:`U`
(``(H_L, C)``) and biases :math:`c`:

.. math::

    E(v, h_1, \dots, h_L, y) = E_{\mathrm{DBM}}(v, h_1, \dots, h_L) - c^\top y - (h_L - o_L)^\top U y

(:math:`o_L` is the top layer's centring offset in a centred DBM, else 0).

The conditionals of one unit (or of the label group) given all the others are

.. math::

    p(x_{l,j} = 1 \mid \cdot) = \sigma(a_{l,j}), \quad a_L = a_L^{\mathrm{DBM}} + U y, \qquad
    p(y = e_k \mid h_L) = \operatorname{softmax}(c + U^\top (h_L - o_L))_k .

**Masked mean field.** Split the visible units into observed ones (``missing = 0``, clamped to the data)
and missing ones :math:`S` (``missing = 1``), and likewise the label. With the fully factorised
:math:`q(v_S, h, y)`, the fixed-point equations replace every state above by its mean
:math:`\mu`; they are iterated layer-parity by layer-parity (odd layers, then even layers: the missing
visibles, :math:`h_2, h_4, \dots`; the label group has the parity of :math:`L + 1`), which is block
coordinate ascent of the mean-field bound

.. math::

    \log \sum_{v_S, h, y_S} e^{-E} \;\ge\; -E(v_O, \mu) + \mathcal H(q).

The start is :math:`\mu_{0,S} = \sigma(b_{0,S})`, the doubled bottom-up pass
(:meth:`~lightning_gm.nn.dbm.BinaryDBM.mean_field_init`) for :math:`h`, and
:math:`\mu_y = \operatorname{softmax}(c + U^\top \mu_L)` for a missing label. After ``steps`` rounds the
prediction of the missing visibles is :math:`\sigma(a_0)` (logits :math:`a_0 = b_0 + W_1 \mu_1`) and that
of the label :math:`\operatorname{softmax}(c + U^\top \mu_L)`.

**Multi-prediction loss** (Goodfellow et al. 2013): for a random subset :math:`S` of the units, the
cross-entropy of the true values of the missing units under these predictions,

.. math::

    J(v, y, S) = -\sum_{i \in S} \big[v_i \log \hat v_i + (1 - v_i) \log (1 - \hat v_i)\big]
                 - [y \in S] \log \hat y_{y},

back-propagated through the unrolled mean-field recurrent net. **Multi-inference** (their section 5,
as we read it): at each round, the input that the observed visibles (and an observed label) pass up
is the average :math:`\tfrac12(v_i + r_i)` of the datum and the current reconstruction
:math:`r = \sigma(a_0)` (:math:`\tfrac12(y + \hat y)` for the label), an inexpensive stand-in for
averaging the predictions of the ensemble of inference problems; the missing units are unchanged.

References:
    Goodfellow, Mirza, Courville & Bengio (2013), Multi-prediction deep Boltzmann machines, NIPS;
    Salakhutdinov & Hinton (2009), Deep Boltzmann machines, AISTATS.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_gm.nn.dbm import BinaryDBM

__all__ = [
    "MaskedMeanField",
    "joint_energy",
    "layer_conditional",
    "masked_mean_field",
    "inpaint",
    "label_logits",
    "multi_prediction_loss",
    "sample_missing",
    "inpainting_mask",
    "MASK_KINDS",
]

#: mask names understood by :func:`inpainting_mask` (``randomNN``: NN percent of the pixels, per example)
MASK_KINDS = ("randomNN", "bottom", "top", "left", "right")


class MaskedMeanField(NamedTuple):
    """Result of :func:`masked_mean_field`.

    Attributes:
        mus: ``[mu_0, mu_1, ..., mu_L]``; ``mu_0`` is the data on observed units, the prediction on missing ones.
        visible_logits: :math:`a_0 = b_0 + W_1\\mu_1` at the end, ``(B, D)`` (the prediction of every visible unit).
        label_logits: :math:`c + U^\\top \\mu_L`, ``(B, C)``, or ``None`` without labels.
        label: the label state, ``(B, C)``: the one-hot datum where observed, the prediction where missing.
        steps: mean-field rounds done.
    """

    mus: list[Tensor]
    visible_logits: Tensor
    label_logits: Optional[Tensor]
    label: Optional[Tensor]
    steps: int


def label_logits(mu_top: Tensor, label_weights: Tensor, label_bias: Tensor, top_offset: Optional[Tensor] = None) -> Tensor:
    r""":math:`c + U^\top (\mu_L - o_L)`, ``(B, C)``, for ``mu_top`` ``(B, H_L)``, ``label_weights`` ``(H_L, C)``;
    ``top_offset`` :math:`o_L` (``None`` = 0)."""
    if top_offset is not None:
        mu_top = mu_top - top_offset
    return label_bias + mu_top @ label_weights


def _top_offset(dbm: BinaryDBM) -> Optional[Tensor]:
    return dbm.offset(dbm.num_layers) if dbm.centered else None


def joint_energy(dbm: BinaryDBM, states: Sequence[Tensor], label: Optional[Tensor] = None,
                 label_weights: Optional[Tensor] = None, label_bias: Optional[Tensor] = None) -> Tensor:
    r""":math:`E_{\mathrm{DBM}}(x) - c^\top y - h_L^\top U y` (the label terms only when ``label`` is given), ``(...)``.

    ``label`` is ``(..., C)`` (one-hot, or the label's mean-field probabilities: the energy is linear in it).
    """
    e = dbm.energy(states)
    if label is not None:
        if label_weights is None or label_bias is None:
            raise ValueError("joint_energy: a label needs label_weights and label_bias")
        top = states[-1] - dbm.offset(dbm.num_layers) if dbm.centered else states[-1]
        e = e - label @ label_bias - ((top @ label_weights) * label).sum(-1)
    return e


def layer_conditional(dbm: BinaryDBM, states: Sequence[Optional[Tensor]], l: int, label: Optional[Tensor] = None,
                      label_weights: Optional[Tensor] = None) -> Tensor:
    r""":math:`p(x_{l,j} = 1 \mid \text{rest}) = \sigma(a_{l,j})`, with :math:`U y` added to the top layer's input
    when a label is attached; the mean-field update of layer ``l`` when ``states`` are means. ``(..., sizes[l])``."""
    a = dbm.layer_input(states, l)
    if l == dbm.num_layers and label is not None and label_weights is not None:
        a = a + label @ label_weights.T
    return torch.sigmoid(a)


def masked_mean_field(
    dbm: BinaryDBM,
    v: Tensor,
    missing: Tensor,
    steps: int = 10,
    label_weights: Optional[Tensor] = None,
    label_bias: Optional[Tensor] = None,
    y: Optional[Tensor] = None,
    label_missing: Optional[Tensor] = None,
    multi_inference: bool = False,
    tol: float = 0.0,
) -> MaskedMeanField:
    r"""Mean field over the missing visibles, all hidden layers and (optionally) the label, the rest clamped.

    Differentiable: gradients flow through every round (the multi-prediction training signal).

    Args:
        dbm: the DBM.
        v: ``(B, D)`` data (values on missing units are ignored).
        missing: ``(B, D)`` (or broadcastable) 1 where a visible unit is to be predicted, 0 where observed.
        steps: mean-field rounds (one round: odd layers, then even layers and the label as its parity says).
        label_weights: :math:`U`, ``(H_L, C)``; ``None``: no label units.
        label_bias: :math:`c`, ``(C,)``.
        y: ``(B,)`` integer labels (values where the label is missing are ignored); ``None`` = all missing.
        label_missing: ``(B,)`` 1 where the label is to be predicted; default all missing.
        multi_inference: use the multi-inference input (module docstring).
        tol: stop early once no mean changes by more than ``tol`` in a round (0 = always ``steps`` rounds).

    Returns:
        :class:`MaskedMeanField`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    v = v.reshape(v.shape[0], -1).to(dbm.weights[0].dtype)
    miss = missing.to(v.dtype).expand_as(v)
    obs = 1.0 - miss
    L = dbm.num_layers
    has_label = label_weights is not None
    if has_label and label_bias is None:
        raise ValueError("label_bias is required with label_weights")
    B = v.shape[0]
    if has_label:
        C = label_weights.shape[1]  # type: ignore[union-attr]
        if label_missing is None or y is None:
            label_missing = torch.ones(B, dtype=v.dtype, device=v.device)
            y_onehot = torch.zeros(B, C, dtype=v.dtype, device=v.device)
        else:
            y_onehot = F.one_hot(y.long(), C).to(v.dtype)
        lmiss = label_missing.to(v.dtype).reshape(B, 1)
    v0 = obs * v + miss * torch.sigmoid(dbm.biases[0])
    mus = dbm.mean_field_init(v0)
    mus[0] = v0
    label: Optional[Tensor] = None
    if has_label:
        label = (1 - lmiss) * y_onehot + lmiss * torch.softmax(label_logits(mus[L], label_weights, label_bias, _top_offset(dbm)), -1)  # type: ignore[arg-type]

    def visible_input() -> Tensor:
        if not multi_inference:
            return mus[0]
        r = torch.sigmoid(dbm.layer_input(mus, 0))
        return obs * 0.5 * (v + r) + miss * mus[0]

    def label_input() -> Optional[Tensor]:
        if not (multi_inference and has_label):
            return label
        q = torch.softmax(label_logits(mus[L], label_weights, label_bias, _top_offset(dbm)), -1)  # type: ignore[arg-type]
        return (1 - lmiss) * 0.5 * (y_onehot + q) + lmiss * label  # type: ignore[operator]

    label_parity = (L + 1) % 2
    done = 0
    for _ in range(steps):
        change = 0.0
        for parity in (1, 0):
            for l in range(parity, L + 1, 2):
                if l == 0:
                    new = obs * v + miss * torch.sigmoid(dbm.layer_input(mus, 0))
                else:
                    inputs = list(mus)
                    if l == 1:
                        inputs[0] = visible_input()
                    new = layer_conditional(dbm, inputs, l, label_input() if l == L else None, label_weights)
                if tol > 0:
                    change = max(change, float((new - mus[l]).detach().abs().max()))
                mus[l] = new
            if has_label and parity == label_parity:
                q = torch.softmax(label_logits(mus[L], label_weights, label_bias, _top_offset(dbm)), -1)  # type: ignore[arg-type]
                new_label = (1 - lmiss) * y_onehot + lmiss * q
                if tol > 0:
                    change = max(change, float((new_label - label).detach().abs().max()))  # type: ignore[operator]
                label = new_label
        done += 1
        if tol > 0 and change < tol:
            break
    vis_logits = dbm.layer_input(mus, 0)
    lab_logits = label_logits(mus[L], label_weights, label_bias, _top_offset(dbm)) if has_label else None  # type: ignore[arg-type]
    return MaskedMeanField(mus, vis_logits, lab_logits, label, done)


@torch.no_grad()
def inpaint(dbm: BinaryDBM, v: Tensor, missing: Tensor, steps: int = 10, tol: float = 0.0) -> Tensor:
    r"""Inpaint with a plain DBM: mean field with the observed pixels clamped; returns ``(B, D)`` probabilities,
    equal to ``v`` on observed pixels and :math:`\sigma(a_0)` on missing ones."""
    v = v.reshape(v.shape[0], -1).to(dbm.weights[0].dtype)
    out = masked_mean_field(dbm, v, missing, steps=steps, tol=tol)
    miss = missing.to(v.dtype).expand_as(v)
    return (1 - miss) * v + miss * torch.sigmoid(out.visible_logits)


def multi_prediction_loss(
    visible_logits: Tensor,
    v: Tensor,
    missing: Tensor,
    label_logits_: Optional[Tensor] = None,
    y: Optional[Tensor] = None,
    label_missing: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per-example :math:`J(v, y, S)` of the module docstring, summed over missing units only.

    Args:
        visible_logits: ``(B, D)`` predictions of the visibles (logits).
        v: ``(B, D)`` true values.
        missing: ``(B, D)`` 1 on missing units.
        label_logits_: ``(B, C)`` label logits, ``y`` ``(B,)`` labels, ``label_missing`` ``(B,)``: optional.

    Returns:
        ``(loss, visible_xent, label_xent)``, each ``(B,)``.
    """
    v = v.reshape(v.shape[0], -1).to(visible_logits.dtype)
    miss = missing.to(v.dtype).expand_as(v)
    vis = (F.binary_cross_entropy_with_logits(visible_logits, v, reduction="none") * miss).sum(-1)
    lab = torch.zeros_like(vis)
    if label_logits_ is not None and y is not None:
        lm = torch.ones_like(vis) if label_missing is None else label_missing.to(vis.dtype)
        lab = F.cross_entropy(label_logits_, y.long(), reduction="none") * lm
    return vis + lab, vis, lab


def sample_missing(shape: Sequence[int], prob: float, per_example: bool = True,
                   generator: Optional[torch.Generator] = None, device: Optional[torch.device] = None) -> Tensor:
    """A random mask (1 = missing) with each unit missing with probability ``prob``; ``shape = (B, D)``.
    With ``per_example=False`` one mask row is drawn and shared by the whole batch."""
    B, D = int(shape[0]), int(shape[1])
    rows = B if per_example else 1
    u = torch.rand(rows, D, generator=generator, device=device)
    return (u < prob).float().expand(B, D).contiguous()


def inpainting_mask(kind: str, n: int, data_shape: Sequence[int], generator: Optional[torch.Generator] = None) -> Tensor:
    """The missing-pixel mask ``(n, D)`` (1 = missing) of a named kind.

    Kinds: ``randomNN`` (each pixel missing with probability NN/100, independently per example, drawn from
    ``generator``), ``bottom`` / ``top`` / ``left`` / ``right`` (that half of a square image missing).

    Raises:
        ValueError: unknown kind, or a half mask on data that is not a square image.
    """
    D = int(math.prod(data_shape))
    m = re.fullmatch(r"random(\d{1,2})", kind)
    if m:
        return (torch.rand(n, D, generator=generator) < int(m.group(1)) / 100).float()
    if kind not in ("bottom", "top", "left", "right"):
        raise ValueError(f"unknown mask kind {kind!r}; expected one of {', '.join(MASK_KINDS)} (e.g. random50)")
    side = math.isqrt(D)
    if side * side != D:
        raise ValueError(f"mask kind {kind!r} needs square images; data_shape={tuple(data_shape)}")
    img = torch.zeros(side, side)
    half = side // 2
    if kind == "bottom":
        img[side - half:, :] = 1
    elif kind == "top":
        img[:half, :] = 1
    elif kind == "left":
        img[:, :half] = 1
    else:
        img[:, side - half:] = 1
    return img.reshape(1, D).expand(n, D).contiguous()
