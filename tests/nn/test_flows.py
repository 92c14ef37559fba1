"""Tests for :mod:`lightning_gm.nn.flows` (plain torch flow layers).

Every registered layer is checked (float64, after perturbing its parameters away from
the identity initialisation, for several seeds) for: exact inversion, log-det equal to
``slogdet`` of the autograd Jacobian, inverse log-det = minus forward log-det, gradients
reaching every parameter, and ``state_dict`` round-trips. Layer-specific tests follow.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import pytest
import torch
from torch import Tensor, nn

from lightning_gm.nn.flows import (
    MADE,
    MAF,
    ActNorm,
    BatchNormFlow,
    AffineCoupling,
    ChannelShuffle,
    ElementwiseAffine,
    Flatten,
    FlowLayer,
    FlowSequence,
    Glow,
    GlowStep,
    InverseAutoregressiveFlow,
    InverseFlow,
    InvertibleConv1x1,
    LogitTransform,
    MaskedAutoregressiveFlow,
    MultiScaleFlow,
    MultiScaleRealNVP,
    PlanarFlow,
    PlanarStack,
    RadialFlow,
    RadialStack,
    RandomPermutation,
    RealNVP,
    ReversePermutation,
    SigmoidTransform,
    Squeeze,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    maf_flow,
    set_batch_norm_statistics,
)

DTYPE = torch.float64
SEEDS = [0, 1]


@dataclass
class Case:
    name: str
    factory: Callable[[], FlowLayer]
    shape: Tuple[int, ...]
    context: int = 0  # context features, 0 = unconditional
    unit_interval: bool = False  # inputs in (0, 1) instead of R
    perturb: float = 0.3  # scale of the random perturbation of the parameters away from the initialisation

    def inputs(self, batch: int, gen: torch.Generator) -> Tuple[Tensor, Optional[Tensor]]:
        if self.unit_interval:
            x = 0.05 + 0.9 * torch.rand(batch, *self.shape, generator=gen, dtype=DTYPE)
        else:
            x = torch.randn(batch, *self.shape, generator=gen, dtype=DTYPE)
        ctx = torch.randn(batch, self.context, generator=gen, dtype=DTYPE) if self.context else None
        return x, ctx


CASES = [
    Case("planar", lambda: PlanarFlow(5), (5,)),
    Case("radial", lambda: RadialFlow(5), (5,)),
    Case("actnorm_vec", lambda: ActNorm(4), (4,)),
    Case("actnorm_img", lambda: ActNorm(2), (2, 4, 4)),
    Case("elementwise_affine", lambda: ElementwiseAffine(4), (4,)),
    Case("logit", lambda: LogitTransform(0.05), (2, 3, 3), unit_interval=True),
    Case("sigmoid", lambda: SigmoidTransform(), (4,)),
    Case("reverse_perm", lambda: ReversePermutation(5), (5,)),
    Case("random_perm", lambda: RandomPermutation(5, seed=3), (5,)),
    Case("channel_shuffle", lambda: ChannelShuffle(4, seed=1), (4, 3, 3)),
    Case("coupling_vec_tanh", lambda: AffineCoupling(alternating_mask(5, 0), hidden_features=16), (5,)),
    Case(
        "coupling_vec_sigmoid",
        lambda: AffineCoupling(alternating_mask(5, 1), hidden_features=16, scale="sigmoid"),
        (5,),
    ),
    Case(
        "coupling_vec_exp_ctx",
        lambda: AffineCoupling(alternating_mask(4, 1), hidden_features=16, scale="exp", context_features=3),
        (4,),
        context=3,
    ),
    Case(
        "coupling_injected_conditioner",
        lambda: AffineCoupling(
            alternating_mask(4, 0), nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8)), clamp=1.5
        ),
        (4,),
    ),
    Case("coupling_checkerboard", lambda: AffineCoupling(checkerboard_mask(2, 4, 4, 0), hidden_features=8), (2, 4, 4)),
    Case(
        "coupling_channel_ctx",
        lambda: AffineCoupling(channel_mask(4, 1), hidden_features=8, scale="sigmoid", context_features=2),
        (4, 3, 3),
        context=2,
    ),
    Case("maf", lambda: MaskedAutoregressiveFlow(5, (16, 16)), (5,)),
    Case(
        "maf_random_order_ctx",
        lambda: MaskedAutoregressiveFlow(5, (16,), context_features=3, ordering="random", seed=2),
        (5,),
        context=3,
    ),
    Case(
        "iaf_ctx",
        lambda: InverseAutoregressiveFlow(5, (16,), context_features=3, scale="sigmoid", ordering="reversed"),
        (5,),
        context=3,
    ),
    Case("invconv_lu", lambda: InvertibleConv1x1(3, seed=0), (3, 2, 2)),
    Case("invconv_plain", lambda: InvertibleConv1x1(3, lu=False, seed=0), (3, 2, 2)),
    Case("invconv_vector", lambda: InvertibleConv1x1(4, seed=1), (4,)),
    Case("glow_step", lambda: GlowStep(4, hidden_channels=8), (4, 2, 2)),
    Case("squeeze", lambda: Squeeze(), (2, 4, 4)),
    Case("glow_multiscale", lambda: Glow((2, 4, 4), num_levels=2, depth=1, hidden_channels=8), (2, 4, 4)),
    Case("realnvp_multiscale", lambda: MultiScaleRealNVP((1, 4, 4), num_levels=2, hidden_channels=8), (1, 4, 4)),
    Case("realnvp_vector", lambda: RealNVP((4,), num_layers=4, hidden_features=16, actnorm=True), (4,)),
    Case(
        "realnvp_vector_ctx",
        lambda: RealNVP((5,), num_layers=3, hidden_features=16, num_hidden_layers=1, context_features=3),
        (5,),
        context=3,
    ),
    Case(
        "realnvp_multiscale_ctx",
        lambda: MultiScaleRealNVP((1, 4, 4), num_levels=2, hidden_channels=8, context_features=2),
        (1, 4, 4),
        context=2,
    ),
    Case(
        "glow_multiscale_ctx",
        lambda: Glow((2, 4, 4), num_levels=2, depth=1, hidden_channels=8, context_features=2),
        (2, 4, 4),
        context=2,
    ),
    Case("maf_stack", lambda: maf_flow(4, num_layers=3, hidden_features=(16,)), (4,)),
    Case(
        "sequence_mixed",
        lambda: FlowSequence(
            [ActNorm(4), PlanarFlow(4), RadialFlow(4), RandomPermutation(4, seed=0), MaskedAutoregressiveFlow(4, (8,))]
        ),
        (4,),
    ),
    Case("batchnorm_vec", lambda: BatchNormFlow(4), (4,)),
    Case("batchnorm_img", lambda: BatchNormFlow(2, eps=1e-4), (2, 4, 4)),
    Case("maf_batchnorm", lambda: MAF((5,), num_layers=2, hidden_features=(8,), batch_norm=True, scale="exp"), (5,)),
    Case(
        "realnvp_multiscale_resnet_bn",
        lambda: MultiScaleRealNVP((1, 4, 4), num_levels=2, hidden_channels=8, num_blocks=2, batch_norm=True),
        (1, 4, 4),
        perturb=0.05,  # ten couplings of deep residual nets: at 0.3 the outputs reach 1e7 and lose float64 digits
    ),
    Case(
        "glow_split_prior_learn_top",
        lambda: Glow((2, 4, 4), num_levels=2, depth=1, hidden_channels=8, split_prior=True, learn_top=True),
        (2, 4, 4),
        perturb=0.1,  # the split prior's scale is an unbounded exp, as in Glow
    ),
    Case("inverse_planar", lambda: InverseFlow(PlanarFlow(4)), (4,)),
    Case("inverse_radial", lambda: InverseFlow(RadialFlow(4)), (4,)),
]
IDS = [c.name for c in CASES]


def prepare(case: Case, seed: int, scale: Optional[float] = None) -> FlowLayer:
    """Build in float64, run the data-dependent init on a batch, perturb all parameters."""
    scale = case.perturb if scale is None else scale
    torch.manual_seed(seed)
    layer = case.factory().to(DTYPE)
    gen = torch.Generator().manual_seed(1000 + seed)
    x, ctx = case.inputs(16, gen)
    layer.train()
    with torch.no_grad():
        layer(x, ctx)  # ActNorm data-dependent initialisation
        for p in layer.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    layer.eval()
    return layer


def jacobian_logdets(layer: FlowLayer, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
    """``log|det J|`` per example from the autograd Jacobian of the flattened map."""
    out = []
    for b in range(x.shape[0]):
        c = None if ctx is None else ctx[b : b + 1]

        def f(v: Tensor) -> Tensor:
            return layer(v.view(1, *x.shape[1:]), c)[0].reshape(-1)

        jac = torch.autograd.functional.jacobian(f, x[b].reshape(-1), vectorize=True)
        assert jac.shape[0] == jac.shape[1], "flow must be dimension preserving"
        out.append(torch.linalg.slogdet(jac).logabsdet)
    return torch.stack(out)


# ---------------------------------------------------------------------------- generic


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_inverse_roundtrip(case: Case, seed: int) -> None:
    layer = prepare(case, seed)
    x, ctx = case.inputs(6, torch.Generator().manual_seed(seed))
    z, ladj = layer(x, ctx)
    assert ladj.shape == (6,)
    assert z.shape == (6, *layer.forward_shape(case.shape))
    assert torch.isfinite(z).all() and torch.isfinite(ladj).all()
    x_rec, ladj_inv = layer.inverse(z, ctx)
    assert x_rec.shape == x.shape
    assert torch.allclose(x_rec, x, atol=1e-5, rtol=0), (x_rec - x).abs().max()
    assert torch.allclose(ladj_inv, -ladj, atol=1e-6, rtol=0)
    # and the other way round: z -> x -> z
    z2, _ = layer(x_rec, ctx)
    assert torch.allclose(z2, z, atol=1e-5, rtol=0)
    assert layer.inverse_shape(layer.forward_shape(case.shape)) == case.shape


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_logdet_matches_autograd_jacobian(case: Case, seed: int) -> None:
    layer = prepare(case, seed)
    x, ctx = case.inputs(3, torch.Generator().manual_seed(10 + seed))
    _, ladj = layer(x, ctx)
    expected = jacobian_logdets(layer, x, ctx)
    assert torch.allclose(ladj, expected, atol=1e-7, rtol=1e-7), (ladj, expected)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_parameter_gets_gradient(case: Case) -> None:
    layer = prepare(case, 0)
    layer.train()
    x, ctx = case.inputs(8, torch.Generator().manual_seed(3))
    x.requires_grad_(True)
    z, ladj = layer(x, ctx)
    loss = 0.5 * z.pow(2).sum() - ladj.sum()  # NLL up to a constant
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_roundtrip(case: Case) -> None:
    layer = prepare(case, 0)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(123)  # different random init / random orderings
    fresh = case.factory().to(DTYPE)
    fresh.load_state_dict(torch.load(buf))
    fresh.train()  # an initialised ActNorm must not re-initialise after loading
    layer.train()  # (and batch norm uses the batch's moments on both sides)
    x, ctx = case.inputs(5, torch.Generator().manual_seed(7))
    z1, l1 = layer(x, ctx)
    z2, l2 = fresh(x, ctx)
    assert torch.equal(z1, z2) and torch.equal(l1, l2)
    x1, _ = layer.inverse(z1, ctx)
    x2, _ = fresh.inverse(z1, ctx)
    assert torch.equal(x1, x2)


@pytest.mark.parametrize("case", [c for c in CASES if c.context], ids=[c.name for c in CASES if c.context])
def test_conditional_layers_depend_on_context(case: Case) -> None:
    layer = prepare(case, 0)
    x, ctx = case.inputs(4, torch.Generator().manual_seed(0))
    assert ctx is not None
    z1, _ = layer(x, ctx)
    z2, _ = layer(x, ctx + 1.0)
    assert (z1 - z2).abs().max() > 1e-3


def test_float32_smoke() -> None:
    torch.manual_seed(0)
    flow = Glow((2, 4, 4), num_levels=2, depth=2, hidden_channels=8)
    x = torch.randn(4, 2, 4, 4)
    z, ladj = flow(x)
    x_rec, _ = flow.inverse(z)
    assert z.dtype == torch.float32 and torch.allclose(x_rec, x, atol=1e-4)


# ---------------------------------------------------------------------------- composition


def test_sequence_logdet_is_sum_of_layers() -> None:
    case = next(c for c in CASES if c.name == "sequence_mixed")
    seq = prepare(case, 0)
    assert isinstance(seq, FlowSequence)
    x, _ = case.inputs(5, torch.Generator().manual_seed(0))
    z, total = seq(x)
    h, parts = x, []
    for layer in seq.layers:
        h, l = layer(h)
        parts.append(l)
    assert torch.allclose(h, z) and torch.allclose(total, torch.stack(parts).sum(0), atol=1e-12)
    # inverse composes in reverse order
    x_rec, total_inv = seq.inverse(z)
    assert torch.allclose(x_rec, x, atol=1e-8) and torch.allclose(total_inv, -total, atol=1e-8)


def test_inverse_flow_swaps_directions() -> None:
    torch.manual_seed(0)
    base = PlanarFlow(3).to(DTYPE)
    inv = InverseFlow(base)
    x = torch.randn(4, 3, dtype=DTYPE)
    z, l = base(x)
    x2, l2 = inv(z)
    assert torch.allclose(x2, x, atol=1e-10) and torch.allclose(l2, -l, atol=1e-10)
    z2, l3 = inv.inverse(x)
    assert torch.equal(z2, z) and torch.equal(l3, l)


# ---------------------------------------------------------------------------- identity init


@pytest.mark.parametrize(
    "factory,shape",
    [
        (lambda: AffineCoupling(alternating_mask(4), hidden_features=8), (4,)),
        (lambda: AffineCoupling(alternating_mask(4), hidden_features=8, scale="exp"), (4,)),
        (lambda: AffineCoupling(checkerboard_mask(2, 4, 4), hidden_features=8), (2, 4, 4)),
        (lambda: MaskedAutoregressiveFlow(4, (8,)), (4,)),
        (lambda: InverseAutoregressiveFlow(4, (8,)), (4,)),
        (lambda: ElementwiseAffine((2, 3)), (2, 3)),
    ],
)
def test_identity_at_initialisation(factory: Callable[[], FlowLayer], shape: Tuple[int, ...]) -> None:
    torch.manual_seed(0)
    layer = factory()
    x = torch.randn(3, *shape)
    z, ladj = layer(x)
    assert torch.equal(z, x) and torch.equal(ladj, torch.zeros(3))


def test_sigmoid_coupling_starts_at_constant_scale() -> None:
    layer = AffineCoupling(alternating_mask(4), hidden_features=8, scale="sigmoid")
    x = torch.randn(3, 4)
    z, ladj = layer(x)
    s = torch.sigmoid(torch.tensor(2.0))
    mask = alternating_mask(4)
    assert torch.allclose(z, mask * x + (1 - mask) * s * x)
    assert torch.allclose(ladj, torch.full((3,), 2 * math.log(s)))


# ---------------------------------------------------------------------------- planar / radial


def test_planar_invertibility_constraint() -> None:
    layer = PlanarFlow(3).to(DTYPE)
    with torch.no_grad():
        layer.w.copy_(torch.tensor([1.0, -2.0, 0.5]))
        layer.u.copy_(-10.0 * layer.w)  # raw u would make the map non-invertible
    wu_hat = torch.dot(layer.w, layer.u_hat())
    assert wu_hat > -1.0
    x = torch.randn(50, 3, dtype=DTYPE) * 3
    z, ladj = layer(x)
    x_rec, _ = layer.inverse(z)
    assert torch.isfinite(ladj).all() and torch.allclose(x_rec, x, atol=1e-7)


def test_radial_invertibility_constraint() -> None:
    layer = RadialFlow(3).to(DTYPE)
    with torch.no_grad():
        layer.alpha_raw.fill_(0.3)
        layer.beta_raw.fill_(-8.0)  # beta close to -alpha: strongly contracting
    alpha, beta = layer.alpha_beta()
    assert alpha > 0 and beta >= -alpha
    x = torch.randn(50, 3, dtype=DTYPE) * 2
    z, ladj = layer(x)
    x_rec, ladj_inv = layer.inverse(z)
    assert torch.allclose(x_rec, x, atol=1e-6) and torch.allclose(ladj_inv, -ladj, atol=1e-6)


# ---------------------------------------------------------------------------- ActNorm


@pytest.mark.parametrize("shape", [(3,), (2, 4, 4)])
def test_actnorm_data_dependent_init(shape: Tuple[int, ...]) -> None:
    torch.manual_seed(0)
    layer = ActNorm(shape[0]).to(DTYPE)
    assert not bool(layer.initialized)
    x = 5.0 + 3.0 * torch.randn(64, *shape, dtype=DTYPE)
    z, ladj = layer(x)
    dims = [d for d in range(z.dim()) if d != 1]
    assert torch.allclose(z.mean(dims), torch.zeros(shape[0], dtype=DTYPE), atol=1e-10)
    assert torch.allclose(z.std(dims, unbiased=False), torch.ones(shape[0], dtype=DTYPE), atol=1e-5)
    assert bool(layer.initialized) and "initialized" in layer.state_dict()
    # log-det consistent with the per-channel scaling
    spatial = math.prod(shape[1:])
    std = x.std(dims, unbiased=False)
    assert torch.allclose(ladj, -spatial * torch.log(std).sum().expand(64), atol=1e-5)
    # no re-initialisation on later batches
    loc = layer.loc.detach().clone()
    layer(torch.randn(64, *shape, dtype=DTYPE))
    assert torch.equal(layer.loc.detach(), loc)


def test_actnorm_eval_mode_does_not_initialise() -> None:
    layer = ActNorm(3).eval()
    x = 4.0 + torch.randn(10, 3)
    z, _ = layer(x)
    assert torch.equal(z, x) and not bool(layer.initialized)


# ---------------------------------------------------------------------------- MADE


def made_jacobian(made: MADE, x: Tensor, ctx: Optional[Tensor]) -> Tensor:
    """Jacobian ``(D, P, D)`` of MADE outputs wrt one input ``x`` ``(D,)``."""
    c = None if ctx is None else ctx.unsqueeze(0)
    return torch.autograd.functional.jacobian(lambda v: made(v.unsqueeze(0), c)[0], x)


@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("hidden_degrees", ["sequential", "random"])
@pytest.mark.parametrize("ordering", ["natural", "reversed", "random", "explicit", "no_hidden"])
def test_made_jacobian_is_strictly_lower_triangular(ordering: str, hidden_degrees: str, context: int) -> None:
    d, p = 5, 3
    hidden: Tuple[int, ...] = () if ordering == "no_hidden" else (24, 24)
    order_spec = {"explicit": [3, 1, 5, 2, 4], "no_hidden": "random"}.get(ordering, ordering)
    torch.manual_seed(0)
    made = MADE(
        d, hidden, num_params=p, context_features=context, ordering=order_spec,
        hidden_degrees=hidden_degrees, seed=4, activation=nn.Tanh,
    ).to(DTYPE)
    for resample in range(2):
        if resample:
            made.resample_connectivity(seed=11)
        order = made.order
        assert torch.equal(made.input_degrees[order], torch.arange(1, d + 1))
        gen = torch.Generator().manual_seed(resample)
        total = torch.zeros(d, p, d, dtype=DTYPE)
        for _ in range(3):
            x = torch.randn(d, generator=gen, dtype=DTYPE)
            ctx = torch.randn(context, generator=gen, dtype=DTYPE) if context else None
            jac = made_jacobian(made, x, ctx)
            total += jac.abs()
            for head in range(p):
                j_sorted = jac[:, head, :][order][:, order]  # rows/cols in autoregressive order
                assert torch.all(torch.triu(j_sorted) == 0), (head, j_sorted)
        allowed = made.input_degrees[None, :] < made.input_degrees[:, None]  # [out, in]
        if hidden_degrees == "sequential":  # full autoregressive connectivity
            for head in range(p):
                assert torch.all(total[:, head, :][allowed] > 0)
            if context:  # every output (also the first in the ordering) sees the context
                x = torch.randn(d, generator=gen, dtype=DTYPE)
                jac_ctx = torch.autograd.functional.jacobian(
                    lambda c: made(x.unsqueeze(0), c.unsqueeze(0))[0], torch.randn(context, dtype=DTYPE)
                )
                assert torch.all(jac_ctx.abs().sum(-1) > 0)


def test_made_output_shape_and_context_dependence() -> None:
    torch.manual_seed(0)
    made = MADE(4, (16,), num_params=2, context_features=3, ordering="random", seed=0)
    x, ctx = torch.randn(7, 4), torch.randn(7, 3)
    out = made(x, ctx)
    assert out.shape == (7, 4, 2)
    first = made.order[0]  # first dim in the ordering depends on the context only
    out2 = made(torch.randn(7, 4), ctx)
    assert torch.allclose(out[:, first], out2[:, first])
    out3 = made(x, ctx + 1)
    assert not torch.allclose(out[:, first], out3[:, first])
    with pytest.raises(ValueError):
        made(x)


def test_made_random_ordering_is_seeded() -> None:
    a = MADE(8, (16,), ordering="random", seed=5)
    b = MADE(8, (16,), ordering="random", seed=5)
    c = MADE(8, (16,), ordering="random", seed=6)
    assert torch.equal(a.input_degrees, b.input_degrees)
    assert not torch.equal(a.input_degrees, c.input_degrees)
    before = a.input_degrees.clone()
    a.resample_connectivity()
    assert not torch.equal(a.input_degrees, before)
    assert torch.equal(MADE(4, (8,), ordering="reversed").input_degrees, torch.tensor([4, 3, 2, 1]))


# ---------------------------------------------------------------------------- MAF / IAF


class _CallCounter:
    def __init__(self, module: nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(self)

    def __call__(self, *args: object) -> None:
        self.calls += 1


@pytest.mark.parametrize("iaf", [False, True])
def test_maf_iaf_number_of_passes(iaf: bool) -> None:
    d = 6
    layer = MaskedAutoregressiveFlow(d, (16,), inverse_autoregressive=iaf, context_features=2)
    counter = _CallCounter(layer.made)
    x, h = torch.randn(3, d), torch.randn(3, 2)
    layer(x, h)
    assert counter.calls == (d if iaf else 1)  # density direction
    counter.calls = 0
    layer.inverse(x, h)
    assert counter.calls == (1 if iaf else d)  # sampling direction


def test_iaf_is_maf_with_directions_swapped() -> None:
    torch.manual_seed(0)
    maf = MaskedAutoregressiveFlow(4, (8,), context_features=2).to(DTYPE)
    iaf = InverseAutoregressiveFlow(4, (8,), context_features=2).to(DTYPE)
    with torch.no_grad():
        for p in maf.parameters():
            p.add_(0.3 * torch.randn_like(p))
    iaf.load_state_dict(maf.state_dict())
    z, h = torch.randn(5, 4, dtype=DTYPE), torch.randn(5, 2, dtype=DTYPE)
    a, la = iaf.inverse(z, h)
    b, lb = maf(z, h)
    assert torch.equal(a, b) and torch.equal(la, lb)


# ---------------------------------------------------------------------------- coupling, logit, squeeze, multiscale


@pytest.mark.parametrize(
    "mask",
    [alternating_mask(5, 1), checkerboard_mask(2, 4, 4, 1), channel_mask(4, 0)],
    ids=["alternating", "checkerboard", "channel"],
)
def test_coupling_leaves_conditioning_part_unchanged(mask: Tensor) -> None:
    torch.manual_seed(0)
    layer = AffineCoupling(mask, hidden_features=8, zero_init=False)
    shape = mask.shape if mask.dim() == 1 else (mask.shape[0], 4, 4)
    x = torch.randn(3, *shape)
    z, _ = layer(x)
    m = mask.expand(shape).bool()
    assert torch.equal(z[:, m], x[:, m]) and not torch.allclose(z[:, ~m], x[:, ~m])


def test_masks() -> None:
    assert alternating_mask(5).tolist() == [1, 0, 1, 0, 1]
    cb = checkerboard_mask(1, 2, 2, 0)
    assert cb.shape == (1, 2, 2) and cb.flatten().tolist() == [1, 0, 0, 1]
    assert channel_mask(4, 1).flatten().tolist() == [0, 0, 1, 1]


def test_logit_logdet_formula() -> None:
    alpha = 0.05
    x = torch.rand(4, 1, 3, 3, dtype=DTYPE)
    y, ladj = LogitTransform(alpha)(x)
    s = alpha + (1 - 2 * alpha) * x
    assert torch.allclose(y, torch.log(s / (1 - s)))
    expected = (math.log(1 - 2 * alpha) - torch.log(s) - torch.log(1 - s)).flatten(1).sum(1)
    assert torch.allclose(ladj, expected)


def test_squeeze_layout() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    z, _ = Squeeze()(x)
    assert z.shape == (1, 4, 2, 2)
    assert z[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert z[0, 0].flatten().tolist() == [0.0, 2.0, 8.0, 10.0]


def test_multiscale_shapes_and_log_prob() -> None:
    torch.manual_seed(0)
    flow = Glow((2, 4, 4), num_levels=2, depth=1, hidden_channels=8)
    assert isinstance(flow, MultiScaleFlow)
    assert flow.z_shapes == [(4, 2, 2), (16, 1, 1)]
    x = torch.randn(3, 2, 4, 4)
    z, ladj = flow(x)
    assert z.shape == (3, 32)
    pieces = flow.split_latent(z)
    assert [tuple(p.shape[1:]) for p in pieces] == flow.z_shapes
    log_px = -0.5 * (z**2).sum(1) - 0.5 * 32 * math.log(2 * math.pi) + ladj
    assert log_px.shape == (3,) and torch.isfinite(log_px).all()
    # the factored-out half of level 0 is exactly the first channels after that level
    h, _ = flow.levels[0](x)
    assert torch.allclose(pieces[0], h[:, :4])


# ---------------------------------------------------------------------------- batch norm


def test_batchnorm_standardises_with_batch_moments_in_training_and_set_statistics_in_evaluation() -> None:
    """Training mode: the batch's moments (output mean 0, variance 1; log-det -1/2 sum log v per position).
    Evaluation: (0, 1) before any statistics, then the exact mean and variance of the data set passed through
    ``set_batch_norm_statistics``; the modes are restored."""
    torch.manual_seed(0)
    bn = BatchNormFlow(3, eps=1e-5).double().eval()
    x = torch.randn(7, 3, 2, 2, dtype=DTYPE) * 3 + 1
    z, ladj = bn(x)
    assert torch.allclose(z, x / math.sqrt(1 + 1e-5))
    assert torch.allclose(ladj, torch.full((7,), -2 * 3 * math.log1p(1e-5), dtype=DTYPE))
    scale = torch.tensor([1.0, 2.0, 0.5], dtype=DTYPE).view(1, 3, 1, 1)
    batches = [torch.randn(5, 3, 2, 2, dtype=DTYPE) * scale + 4 for _ in range(4)]
    bn.train()
    z, ladj = bn(batches[0])
    per_channel = z.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3, dtype=DTYPE), atol=1e-12)
    assert torch.allclose(per_channel.var(1, unbiased=False), torch.ones(3, dtype=DTYPE), atol=1e-4)
    var = batches[0].transpose(0, 1).reshape(3, -1).var(1, unbiased=False) + 1e-5
    assert torch.allclose(ladj, (-0.5 * var.log().sum() * 4).expand(5))
    assert float(bn.stat_count) == 0  # training steps do not gather statistics
    bn.eval()
    assert set_batch_norm_statistics(bn, batches) == 20 and not bn.training
    seen = torch.cat(batches).transpose(0, 1).reshape(3, -1)
    mean, var = bn.statistics()
    assert torch.allclose(mean, seen.mean(1)) and torch.allclose(var, seen.var(1, unbiased=False) + 1e-5)


def test_set_statistics_on_one_batch_makes_evaluation_equal_training_mode() -> None:
    """Statistics gathered from one chunk holding the whole data set are that chunk's moments at every layer, so
    the stacked flow evaluates it exactly as in training mode (MAF's full-training-set statistics)."""
    torch.manual_seed(0)
    flow = MAF((5,), num_layers=3, hidden_features=(16,), batch_norm=True).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.randn(300, 5, dtype=DTYPE) * 2 + 1
    flow.train()
    z_train, ladj_train = flow(x)
    flow.eval()
    set_batch_norm_statistics(flow, [x])
    z_eval, ladj_eval = flow(x)
    assert torch.allclose(z_eval, z_train, atol=1e-10) and torch.allclose(ladj_eval, ladj_train, atol=1e-10)


def test_flow_model_sets_batchnorm_statistics_from_a_prefix_of_its_loader_without_touching_the_rng() -> None:
    from lightning_gm.models import Flow

    torch.manual_seed(0)
    model = Flow(data_shape=(5,), flow=MAF((5,), num_layers=2, hidden_features=(8,), batch_norm=True),
                 batch_norm_examples=250).double().eval()
    x = torch.randn(300, 5, dtype=DTYPE)
    state = torch.random.get_rng_state()
    assert model.set_batch_norm_statistics([x[:100], x[100:200], x[200:]]) == 250
    assert torch.equal(torch.random.get_rng_state(), state)
    first = next(m for m in model.modules() if isinstance(m, BatchNormFlow))
    assert float(first.stat_count) == 250 and not first.training
    lp_eval = model.log_prob(x[:250])
    model.train()
    assert torch.allclose(lp_eval, model.log_prob(x[:250]), atol=1e-9)


# ---------------------------------------------------------------------------- whole architectures


@pytest.mark.parametrize(("stack", "layer"), [(PlanarStack, PlanarFlow), (RadialStack, RadialFlow)])
def test_layer_stacks_flatten_images_and_hold_fresh_layers(stack, layer) -> None:
    flow = stack((1, 2, 3), num_layers=3)
    kinds = [type(m) for m in flow.layers]
    assert kinds == [Flatten, layer, layer, layer]
    assert len({id(p) for m in flow.layers[1:] for p in m.parameters()}) == 3 * len(list(flow.layers[1].parameters()))
    assert [type(m) for m in stack((6,), num_layers=2).layers] == [layer, layer]  # vectors are not flattened


@pytest.mark.parametrize("arch", [Glow, MultiScaleRealNVP])
def test_image_architectures_name_the_flatten_switch_for_vectors(arch) -> None:
    with pytest.raises(ValueError, match=rf"^{arch.__name__} needs image data \(C, H, W\), got shape \(784,\): set data.flatten=false$"):
        arch((784,))
