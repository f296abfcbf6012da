"""The package's one policy on non-finite and extreme values, on every public module.

Every public module raises a ValueError naming the argument when a tensor it is given holds a NaN
or an infinity, and, when the input is finite but the result overflows, a ValueError naming the
module and the argument instead of a NaN or infinite result. Scale-invariant computations give the
same value for tiny and huge finite rows as for ordinary ones. The functions of
``pml_regularizers.functional`` do not check: a NaN in gives a non-finite result, never a finite
one. docs/quickstart.md states the policy."""

import math

import pytest
import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.distances import DotProductSimilarity, LpDistance

import pml_regularizers
from pml_regularizers import (
    DuelingFlowEmbedder,
    DVMLEmbedder,
    DVMLLoss,
    DVMLMiner,
    DVMLTrainer,
    FlowEmbedder,
    JacobianDeterminantLoss,
    JacobianDeterminantRegularizer,
    SkewedMeanRegularizer,
)
from pml_regularizers import functional as F

from .conftest import TEST_DTYPES

LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def randomised(module, std=0.5):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def poisoned(x, value):
    x = x.clone()
    x.view(-1)[3] = value
    return x


def dvml_trainer_step(features):
    """One DVMLTrainer loss computation on trunk features (an identity trunk)."""
    data = torch.utils.data.TensorDataset(torch.randn(6, 8), LABELS)
    embedder = DVMLEmbedder(8, 4)
    trainer = DVMLTrainer(
        models={"trunk": torch.nn.Identity(), "embedder": embedder},
        optimizers={"embedder_optimizer": torch.optim.SGD(embedder.parameters(), 0.1)},
        batch_size=6,
        loss_funcs={"metric_loss": losses.ContrastiveLoss()},
        mining_funcs={},
        dataset=data,
        dataloader_num_workers=0,
        num_samples=2,
    )
    trainer.epoch = 1
    trainer.calculate_loss((features, LABELS))


def flow_regularizer(x):
    flow = FlowEmbedder(8, 4, hidden_features=8)
    z = flow(torch.randn(6, 8))
    JacobianDeterminantRegularizer(flow)(torch.where(torch.isfinite(x[:, :4]), z, x[:, :4]))


def flow_loss(x):
    flow = FlowEmbedder(8, 4, hidden_features=8)
    flow(torch.randn(6, 8))
    JacobianDeterminantLoss(losses.ContrastiveLoss(), flow)(x[:, :4], LABELS)


def miner_call(x, which):
    ref = torch.randn(12, 8)
    real = x if which == "embeddings" else torch.randn(6, 8)
    ref = ref if which == "embeddings" else poisoned(ref, x.view(-1)[3].item())
    DVMLMiner(miners.MultiSimilarityMiner())(real, LABELS, ref, LABELS.repeat_interleave(2))


# (module, call on a (6, 8) float32 tensor, the argument the message must name)
CALLS = {
    "SkewedMeanRegularizer": (lambda x: SkewedMeanRegularizer()(x), "x"),
    "SkewedMeanRegularizer rowwise": (lambda x: SkewedMeanRegularizer(form="rowwise")(x), "x"),
    "FlowEmbedder": (lambda x: FlowEmbedder(8, 4, hidden_features=8)(x), "x"),
    "FlowEmbedder.inverse": (lambda x: FlowEmbedder(8, 8, hidden_features=8).inverse(x), "z"),
    "DuelingFlowEmbedder": (lambda x: DuelingFlowEmbedder(8, 4, hidden_features=8)(x), "x"),
    "JacobianDeterminantRegularizer": (flow_regularizer, "x"),
    "JacobianDeterminantLoss": (flow_loss, "embeddings"),
    "DVMLEmbedder": (lambda x: DVMLEmbedder(8, 4)(x), "x"),
    "DVMLEmbedder with samples": (lambda x: DVMLEmbedder(8, 4)(x, num_samples=3), "x"),
    "DVMLEmbedder noise": (
        lambda x: DVMLEmbedder(8, 4)(torch.randn(6, 8), num_samples=2, noise=x[:, :4].reshape(6, 1, 4).repeat(1, 2, 1)),
        "noise",
    ),
    "DVMLEmbedder.encode": (lambda x: DVMLEmbedder(8, 4).encode(x), "x"),
    "DVMLEmbedder.decode": (lambda x: DVMLEmbedder(8, 4).decode(x[:, :4]), "z"),
    "DVMLEmbedder.sample": (
        lambda x: DVMLEmbedder(8, 4).sample(x[:, :4], torch.zeros(6, 4), torch.zeros(6, 4), 2),
        "invariant",
    ),
    "DVMLMiner embeddings": (lambda x: miner_call(x, "embeddings"), "embeddings"),
    "DVMLMiner ref_emb": (lambda x: miner_call(x, "ref_emb"), "ref_emb"),
    "DVMLLoss": (
        lambda x: DVMLLoss(DVMLEmbedder(8, 4), losses.ContrastiveLoss(), num_samples=2)(x, LABELS, 1),
        "features",
    ),
    "DVMLTrainer": (dvml_trainer_step, "features"),
}


def test_every_public_module_is_covered():
    classes = {name: getattr(pml_regularizers, name) for name in pml_regularizers.__all__}
    public = {
        name
        for name, c in classes.items()
        if isinstance(c, type) and not issubclass(c, tuple) and c is not pml_regularizers.set_finite_checks
    }
    covered = {key.split()[0].split(".")[0] for key in CALLS}
    assert public == covered


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("case", list(CALLS))
def test_non_finite_input_raises_naming_the_argument(case, value):
    call, name = CALLS[case]
    with pytest.raises(ValueError, match=rf"^{name} contains non-finite values \(nan or inf\)$"):
        call(poisoned(torch.randn(6, 8), value))


def test_huge_finite_float64_values_whose_sum_overflows_pass_the_check():
    """The check sums each tensor in float64; finite values near float64's largest overflow that
    sum, and must still pass, while a NaN, +inf or -inf among them is found."""
    from pml_regularizers._checks import check_finite

    x = torch.full((4, 3), 1.5e308, dtype=torch.float64)
    y = torch.full((5,), -1.5e308, dtype=torch.float64)
    check_finite("M", {"x": x}, [y])
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="^x contains non-finite values"):
            check_finite("M", {"x": poisoned(x, value)}, [y])
        with pytest.raises(ValueError, match="^M: x is finite but the result is not"):
            check_finite("M", {"x": x}, [poisoned(y, value)])


def test_finite_checks_can_be_turned_off_in_a_block_or_from_here_on():
    x = poisoned(torch.randn(6, 8), math.nan)
    flow = FlowEmbedder(8, 4, hidden_features=8)
    with pml_regularizers.set_finite_checks(False):
        assert not pml_regularizers.finite_checks_enabled()
        assert torch.isnan(SkewedMeanRegularizer()(x))  # passes through, as in torch
        assert torch.isnan(flow(x)).any()
        with pytest.raises(ValueError, match="centers_per_class"):  # settings are still checked
            SkewedMeanRegularizer(centers_per_class=4)(x)
    assert pml_regularizers.finite_checks_enabled()  # the block restores the previous setting
    with pytest.raises(ValueError, match="x contains non-finite values"):
        SkewedMeanRegularizer()(x)
    pml_regularizers.set_finite_checks(False)
    try:
        assert torch.isnan(flow(x)).any()
    finally:
        pml_regularizers.set_finite_checks(True)
    with pytest.raises(ValueError, match="x contains non-finite values"):
        flow(x)
    with pytest.raises(ValueError, match="enabled must be True or False"):
        pml_regularizers.set_finite_checks("no")


def test_finite_checks_as_a_decorator_change_the_setting_only_inside_calls():
    x = poisoned(torch.randn(6, 8), math.nan)

    @pml_regularizers.set_finite_checks(False)
    def unchecked(rows):
        assert not pml_regularizers.finite_checks_enabled()
        return SkewedMeanRegularizer()(rows)

    assert pml_regularizers.finite_checks_enabled()  # decorating alone changes nothing
    assert torch.isnan(unchecked(x))
    assert pml_regularizers.finite_checks_enabled()  # restored after the call
    assert unchecked.__name__ == "unchecked"

    @pml_regularizers.set_finite_checks(False)
    def failing():
        raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        failing()
    assert pml_regularizers.finite_checks_enabled()  # restored when the call raises

    with pml_regularizers.set_finite_checks(False):  # a decorated True re-enables inside only
        checked = pml_regularizers.set_finite_checks(True)(lambda: pml_regularizers.finite_checks_enabled())
        assert not pml_regularizers.finite_checks_enabled()
        assert checked()
        assert not pml_regularizers.finite_checks_enabled()
    assert pml_regularizers.finite_checks_enabled()


def _generator():
    yield 1


async def _coroutine():
    return 1


@pytest.mark.parametrize("target", [42, _generator, _coroutine], ids=["not callable", "generator", "coroutine"])
def test_misusing_set_finite_checks_leaves_the_setting_as_it_was(target):
    with pytest.raises(TypeError, match="set_finite_checks decorates plain functions"):
        pml_regularizers.set_finite_checks(False)(target)
    assert pml_regularizers.finite_checks_enabled()
    with pytest.raises(ValueError, match="enabled must be True or False"):
        pml_regularizers.set_finite_checks(_generator)  # @set_finite_checks without (False)
    assert pml_regularizers.finite_checks_enabled()


# finite input whose result overflows: (call, the message's module and argument)
OVERFLOWS = {
    "SkewedMeanRegularizer dot product": (
        lambda x: SkewedMeanRegularizer(distance=DotProductSimilarity(normalize_embeddings=False))(x),
        "SkewedMeanRegularizer: x is finite",
    ),
    "SkewedMeanRegularizer raw distance": (
        lambda x: SkewedMeanRegularizer(distance=LpDistance(normalize_embeddings=False))(x),
        "SkewedMeanRegularizer: x is finite",
    ),
    "FlowEmbedder": (lambda x: randomised(FlowEmbedder(8, 4, hidden_features=8))(x), "FlowEmbedder: x is finite"),
    "FlowEmbedder.inverse": (
        lambda x: randomised(FlowEmbedder(8, 8, hidden_features=8)).inverse(x),
        "FlowEmbedder.inverse: z is finite",
    ),
    "DVMLEmbedder": (lambda x: DVMLEmbedder(8, 4)(x, num_samples=2), "DVMLEmbedder: x is finite"),
    "DVMLLoss": (
        lambda x: DVMLLoss(DVMLEmbedder(8, 4), losses.ContrastiveLoss(), num_samples=2)(x, LABELS, 1),
        "DVMLEmbedder: x is finite",
    ),
}


@pytest.mark.parametrize("case", list(OVERFLOWS))
def test_finite_input_whose_result_overflows_raises(case):
    call, start = OVERFLOWS[case]
    x = 3e37 * (2 * torch.rand(6, 8) - 1)
    with pytest.raises(
        ValueError,
        match=rf"^{start} but the result is not \(largest \|\w+\| = [0-9.e+]+(; lam = 4)?\): "
        "the computation overflowed or was undefined in float32",
    ):
        call(x)


def test_an_overflow_caused_by_a_setting_names_it():
    flow = FlowEmbedder(8, 4, hidden_features=8)
    z = flow(torch.randn(6, 8))
    message = (
        r"JacobianDeterminantRegularizer: x is finite but the result is not \(largest \|x\| = "
        r"[0-9.e+-]+; target = 1e\+20\): .* float32; scale the input down, use smaller settings"
    )
    with pytest.raises(ValueError, match=message):
        JacobianDeterminantRegularizer(flow, target=1e20)(z)


def test_a_weighted_dvml_total_that_overflows_names_the_weights():
    weights = (1e39, 1e39, 0, 0)
    loss = DVMLLoss(DVMLEmbedder(8, 4), losses.ContrastiveLoss(), num_samples=2, phase1_weights=weights)
    message = r"DVMLLoss: features is finite but the result is not \(.*weight of kl_loss = 1e\+39"
    with pytest.raises(ValueError, match=message):
        loss(torch.randn(6, 8), LABELS, 1)


@pytest.mark.parametrize("lam", [1e39, 1e300, -1e300])
@pytest.mark.parametrize("form", ["pairwise", "rowwise"])
def test_skewed_mean_with_lam_beyond_float32_is_the_extreme(lam, form):
    x = torch.randn(6, 5)
    reg = SkewedMeanRegularizer(lam=lam, form=form)
    limit = SkewedMeanRegularizer(lam=math.copysign(1e30, lam), form=form)(x.double()).item()
    assert reg(x).item() == pytest.approx(limit, rel=1e-6)


def test_large_log_variance_is_an_overflow_not_an_infinite_kl():
    embedder = DVMLEmbedder(8, 4)
    with torch.no_grad():
        embedder.heads.bias[8:].fill_(100.0)  # log sigma^2 = 100: exp overflows float32
    with pytest.raises(ValueError, match="DVMLEmbedder: x is finite but the result is not"):
        embedder(torch.randn(6, 8), num_samples=2)


@pytest.mark.parametrize("dtype", TEST_DTYPES)
@pytest.mark.parametrize("form", ["pairwise", "rowwise"])
@pytest.mark.parametrize("distance", [None, LpDistance])
def test_skewed_mean_of_tiny_and_huge_rows_equals_that_of_ordinary_rows(dtype, form, distance):
    """Cosine and normalised distances do not depend on the rows' scale; before normalising, rows
    of 1e30 squared to inf (float32) and rows of 1e-30 squared to 0, giving wrong finite values."""
    kwargs = {} if distance is None else {"distance": distance()}
    x = torch.randn(7, 5, dtype=torch.float64)
    reg = SkewedMeanRegularizer(lam=4.0, form=form, collect_stats=True, **kwargs)
    expected = reg(x).item()
    expected_stats = (reg.min_distance, reg.mean_similarity)
    info = torch.finfo(dtype)
    for scale in [info.max / 8, info.tiny * 4, info.eps]:
        got = reg((x * scale).to(dtype))
        tol = 2e-3 if dtype == torch.float16 else 1e-5
        assert got.item() == pytest.approx(expected, rel=tol, abs=tol), scale
        assert (reg.min_distance, reg.mean_similarity) == pytest.approx(expected_stats, rel=tol, abs=tol)


FUNCTIONS = {
    "skewed_mean": lambda t: F.skewed_mean(t, 3.0),
    "skewed_mean lam=0": lambda t: F.skewed_mean(t, 0.0),
    "gram_pairwise_skewed_mean": lambda t: F.gram_pairwise_skewed_mean(t, -3.0),
    "row_skewed_means": lambda t: F.row_skewed_means(t, lambda q, r: -torch.cdist(q, r), 3.0),
    "pairwise_cosine_stats": lambda t: torch.tensor(F.pairwise_cosine_stats(t)),
    "logdet_penalty": lambda t: F.logdet_penalty(t, "hinge"),
    "same_class_interpolation": lambda t: F.same_class_interpolation(t, torch.arange(6).repeat(2)[:8] // 2, 1.0)[0],
    "gaussian_kl_to_standard_normal": lambda t: F.gaussian_kl_to_standard_normal(t, t),
    "reparameterized_samples": lambda t: F.reparameterized_samples(t, t, t, 2),
    "reconstruction_error": lambda t: F.reconstruction_error(t, t.repeat(2, 1)),
    "max_scaled_rows": F.max_scaled_rows,
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_functional_passes_nan_through(name):
    x = poisoned(torch.randn(8, 4), math.nan)
    assert not torch.isfinite(FUNCTIONS[name](x)).all()
