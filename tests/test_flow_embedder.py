"""FlowEmbedder and DuelingFlowEmbedder: invertibility, identity at initialisation, the cached
log|det J| against brute-force Jacobians (torch.func.jacrev + slogdet), zuko's own coupling, the
soft clamp, dtypes and error messages."""

import copy
import math
import pickle
from functools import partial

import pytest
import torch
from zuko.transforms import CouplingTransform

from pml_regularizers import DuelingFlowEmbedder, FlowEmbedder

from .conftest import TEST_DTYPES, rtol_for

SHAPES = [(8, 8), (5, 5), (12, 7), (3, 32), (32, 32)]  # (in, out); in != out adds the projection
COUPLINGS = ["affine", "additive"]


def randomised(flow, std=0.5):
    """The flow with every parameter redrawn, so that it is far from the identity."""
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, std)
    return flow


def projected(flow, x):
    return x if flow.projection is None else flow.projection(x)


def brute_force_logdet(flow, h):
    """log|det| of the invertible part's Jacobian at each row of h, and the signs, in float64."""
    jac = torch.func.vmap(torch.func.jacrev(flow.transform()))(h)
    sign, logabsdet = torch.linalg.slogdet(jac)
    return sign, logabsdet


@pytest.mark.parametrize("coupling", COUPLINGS)
@pytest.mark.parametrize("shape", SHAPES)
def test_inverse_of_forward_float64(coupling, shape):
    flow = randomised(FlowEmbedder(*shape, num_blocks=3, coupling=coupling, hidden_features=16)).double()
    x = torch.randn(10, shape[0], dtype=torch.float64)
    z = flow(x)
    assert z.shape == (10, shape[1]) and z.dtype == torch.float64
    assert (z - projected(flow, x)).abs().max() > 0.1  # not the identity
    torch.testing.assert_close(flow.inverse(z), projected(flow, x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("coupling", COUPLINGS)
@pytest.mark.parametrize("shape", SHAPES)
def test_identity_at_initialisation(coupling, shape):
    flow = FlowEmbedder(*shape, coupling=coupling, hidden_features=16)
    x = torch.randn(6, shape[0])
    z = flow(x)
    if shape[0] == shape[1]:
        assert flow.projection is None
        assert torch.equal(z, x)
    else:
        assert torch.equal(z, flow.projection(x))
    assert torch.equal(flow.latest_logdet, torch.zeros(6))


@pytest.mark.parametrize("coupling", COUPLINGS)
@pytest.mark.parametrize("shape", SHAPES)
def test_cached_logdet_equals_brute_force_jacobian(coupling, shape):
    flow = randomised(FlowEmbedder(*shape, num_blocks=4, coupling=coupling, hidden_features=24)).double()
    x = torch.randn(7, shape[0], dtype=torch.float64)
    flow(x)
    sign, expected = brute_force_logdet(flow, projected(flow, x))
    assert torch.equal(sign, torch.ones(7, dtype=torch.float64))  # every block is increasing
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(flow.latest_logdet, expected, rtol=1e-10, atol=1e-10)
    assert torch.equal(flow.latest_features, x)


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_logdet_of_the_whole_module_without_projection(coupling):
    """The Jacobian of the public forward itself (no internals), sample by sample."""
    flow = randomised(FlowEmbedder(6, 6, coupling=coupling, hidden_features=12)).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    _, logdet = flow.forward_and_logdet(x)
    for i in range(4):
        jac = torch.func.jacrev(lambda v: flow.forward_and_logdet(v.unsqueeze(0))[0][0])(x[i])
        assert logdet[i].item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), rel=1e-10, abs=1e-12)


def test_additive_logdet_is_the_scaling_layer_and_input_free():
    flow = randomised(FlowEmbedder(6, 6, coupling="additive", hidden_features=12)).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    _, logdet = flow.forward_and_logdet(x)
    sigma = flow.blocks[-1]._0  # NICE's diagonal log-scale, soft-clamped as in zuko
    c = flow.clamp
    expected = (sigma / (1 + sigma.abs() / c)).sum()
    torch.testing.assert_close(logdet, expected.expand(5), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(8, 8), (9, 9)])
def test_sliced_coupling_equals_zuko_coupling(shape):
    """The one change to zuko: slicing instead of its index-based split and merge."""
    flow = randomised(FlowEmbedder(*shape, hidden_features=10)).double()
    x = torch.randn(5, shape[1], dtype=torch.float64)
    for block in flow.blocks:
        ours = block()
        stock = CouplingTransform(partial(block.meta, None), block.mask)
        y, ladj = ours.call_and_ladj(x)
        y_ref, ladj_ref = stock.call_and_ladj(x)
        # the same maths; a sliced view and a gathered copy may take different BLAS paths
        torch.testing.assert_close(y, y_ref, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(ladj, ladj_ref, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(ours.inv(y), stock.inv(y_ref), rtol=1e-13, atol=1e-13)
        x = y


def test_soft_clamp_bounds_the_logdet():
    d, blocks, c = 10, 3, 1.5
    flow = FlowEmbedder(d, d, num_blocks=blocks, hidden_features=8, clamp=c).double()
    x = torch.randn(4, d, dtype=torch.float64)
    bound = blocks * c * d / 2
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for block in flow.blocks:
                block.hyper[-1].bias.fill_(sign * 1e6)  # every raw log-scale huge
        _, logdet = flow.forward_and_logdet(x)
        assert torch.all(logdet.abs() < bound)
        assert torch.all(logdet.abs() > 0.999 * bound)
        assert torch.all(torch.sign(logdet) == sign)


@pytest.mark.parametrize("dtype", TEST_DTYPES)
@pytest.mark.parametrize("flow_dtype", ["float32", "same"])
def test_dtypes(dtype, flow_dtype):
    flow = randomised(FlowEmbedder(12, 8, hidden_features=16), std=0.2)
    ref = copy.deepcopy(flow).double()
    if flow_dtype == "same":
        flow = flow.to(dtype)
    x = torch.randn(6, 12, dtype=torch.float64)
    z = flow(x.to(dtype))
    assert z.dtype == dtype
    assert flow.latest_logdet.dtype == (dtype if flow_dtype == "same" else torch.float32)
    z_ref, logdet_ref = ref.forward_and_logdet(x)
    torch.testing.assert_close(z.double(), z_ref, rtol=rtol_for(dtype), atol=rtol_for(dtype))
    torch.testing.assert_close(flow.latest_logdet.double(), logdet_ref, rtol=rtol_for(dtype), atol=rtol_for(dtype))
    back = flow.inverse(z)
    assert back.dtype == dtype


def test_gradients_reach_trunk_features_and_every_parameter():
    flow = FlowEmbedder(6, 4, hidden_features=8)
    x = torch.randn(5, 6, requires_grad=True)
    z = flow(x)
    (z.square().sum() + flow.latest_logdet.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in flow.named_parameters():
        assert p.grad is not None, name
    # zero-initialised last layers: their gradient is what moves the flow off the identity
    assert flow.blocks[0].hyper[-1].weight.grad.abs().sum() > 0


def test_copy_and_pickle_drop_the_cache():
    flow = FlowEmbedder(6, 6, hidden_features=8)
    flow(torch.randn(3, 6, requires_grad=True))  # the cache holds a graph: not deep-copyable
    for clone in (copy.deepcopy(flow), pickle.loads(pickle.dumps(flow))):
        with pytest.raises(RuntimeError, match="has not run yet"):
            _ = clone.latest_logdet
        x = torch.randn(3, 6)
        torch.testing.assert_close(clone(x), flow(x))
    assert flow.latest_logdet.shape == (3,)


def test_dueling_branches():
    torch.manual_seed(1)
    dueling = DuelingFlowEmbedder(6, 4, hidden_features=8)
    randomised(dueling.branch1)
    randomised(dueling.branch2)
    assert dueling.out_features == 4 and dueling.in_features == 6
    names = {n.split(".")[0] for n, _ in dueling.named_parameters()}
    assert names == {"branch1", "branch2"}
    x = torch.randn(5, 6)
    z = dueling(x)
    torch.testing.assert_close(z, dueling.branch1.forward_and_logdet(x)[0])
    assert torch.equal(dueling.logdet_of(z), dueling.branch1.latest_logdet)
    l2 = dueling.branch2_logdet_of(z)
    torch.testing.assert_close(l2, dueling.branch2.forward_and_logdet(x)[1])
    assert not torch.allclose(l2, dueling.latest_logdet)
    torch.testing.assert_close(dueling.inverse(z), dueling.branch1.projection(x))
    with torch.no_grad():  # as in PML's testers: branch 2 does not run
        z_eval = dueling(torch.randn(3, 6))
    with pytest.raises(RuntimeError, match="branch 2 did not run"):
        dueling.branch2_logdet_of(z_eval)
    torch.testing.assert_close(dueling.branch2_logdet_of(z), l2)  # the earlier forward's, still
    assert dueling.branch2.latest_logdet.shape == (5,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_features": 0}, "in_features must be a positive int"),
        ({"out_features": 1}, "out_features must be an int >= 2"),
        ({"out_features": 4.0}, "out_features must be an int >= 2"),
        ({"num_blocks": 0}, "num_blocks must be a positive int"),
        ({"coupling": "spline"}, "coupling must be one of"),
        ({"hidden_features": ()}, "hidden_features must be a positive int or a non-empty"),
        ({"hidden_features": (8, 0)}, "hidden_features must be"),
        ({"hidden_features": "64"}, "hidden_features must be a positive int or a non-empty sequence of them, got .64."),
        ({"clamp": 0.0}, "clamp must be between 1e-06 and 80, got 0"),
        ({"clamp": 1e-300}, "clamp must be between 1e-06 and 80, got 1e-300"),
        ({"clamp": 800.0}, "clamp must be between 1e-06 and 80, got 800: a block scales by up to e"),
        ({"clamp": math.inf}, "clamp must be a finite real number, got inf"),
        ({"clamp": "large"}, "clamp must be a finite real number, got 'large'"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"in_features": 4, "out_features": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        FlowEmbedder(**args)


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.randn(5, 3), r"x must be 2-D with shape \(N, in_features=4\), got shape \(5, 3\)"),
        (torch.randn(4), r"got shape \(4,\)"),
        (torch.ones(2, 4, dtype=torch.long), "floating-point dtype, got torch.int64"),
        (torch.tensor([[0.0, 1.0, math.inf, 2.0]]), "x contains non-finite"),
        (torch.tensor([[0.0, 1.0, math.nan, 2.0]]), "x contains non-finite"),
        ([[0.0] * 4], "x must be a torch.Tensor"),
    ],
)
def test_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        FlowEmbedder(4, 6, hidden_features=8)(x)


def test_bad_inverse_input_and_record_errors():
    flow = FlowEmbedder(4, 6, hidden_features=8)
    with pytest.raises(ValueError, match=r"z must be 2-D with shape \(N, out_features=6\)"):
        flow.inverse(torch.randn(3, 4))
    with pytest.raises(RuntimeError, match="FlowEmbedder has not run yet"):
        flow.logdet_of(torch.randn(3, 6))
    z = flow(torch.randn(3, 4))
    for other in (torch.randn(3, 6), torch.randn(5, 6), z[:2], z * 2, torch.cat([z, z])):
        with pytest.raises(ValueError, match=r"were not returned by FlowEmbedder's forward"):
            flow.logdet_of(other)
