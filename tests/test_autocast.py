"""Every plugin module under CPU bfloat16 autocast: finite, within tolerance of float32, and the
quantities that need precision (the skewed mean, log-determinants, DVML's heads and divergences)
computed exactly as without autocast (autocast turns matrix products into bfloat16, with relative
errors near 1e-2, so the tight comparisons fail if a module lets it in)."""

import pytest
import torch
from pytorch_metric_learning import losses, miners

from pml_regularizers import (
    DuelingFlowEmbedder,
    DVMLEmbedder,
    DVMLLoss,
    DVMLMiner,
    FlowEmbedder,
    JacobianDeterminantLoss,
    JacobianDeterminantRegularizer,
    SkewedMeanRegularizer,
)

LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


def randomised(module, std=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def trunk_output(x):
    """What a trunk hands the plugin under autocast: bfloat16 features."""
    return torch.nn.functional.linear(x, torch.eye(x.shape[1]))


@pytest.mark.parametrize("form", ["pairwise", "rowwise"])
def test_skewed_mean_stays_in_float32(form):
    x = torch.randn(40, 16)
    reg = SkewedMeanRegularizer(lam=4.0, form=form)
    expected = reg(x)
    with torch.autocast(**BF16):
        got = reg(x)
        got_bf16 = reg(trunk_output(x))
    assert got.dtype == torch.float32 and got_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got_bf16.float(), reg(x.bfloat16().float()), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("embedder", ["flow", "dueling"])
def test_flow_logdets_and_embeddings_stay_in_float32(embedder):
    flow = randomised(
        FlowEmbedder(16, 8, hidden_features=32)
        if embedder == "flow"
        else DuelingFlowEmbedder(16, 8, hidden_features=32)
    )
    x = torch.randn(8, 16)
    z_expected = flow(x)
    logdet_expected = flow.logdet_of(z_expected)
    reg = JacobianDeterminantRegularizer(flow)
    with torch.autocast(**BF16):
        z = flow(x)
        value = reg(z)
        z_half = flow(trunk_output(x))
    logdet = flow.logdet_of(z)
    assert z.dtype == logdet.dtype == torch.float32
    torch.testing.assert_close(z, z_expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(logdet, logdet_expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(value, logdet_expected.square().mean(), rtol=1e-6, atol=1e-6)
    assert z_half.dtype == torch.bfloat16 and flow.logdet_of(z_half).dtype == torch.float32
    assert torch.isfinite(z_half).all()


def test_the_full_determinant_loss_is_finite_and_close_to_float32():
    emb = randomised(DuelingFlowEmbedder(16, 8, hidden_features=32))
    loss_fn = JacobianDeterminantLoss(
        losses.ContrastiveLoss(), emb, penalty_weight=0.5, reward_weight=0.2, interpolation_eps=0.5
    )
    x = torch.randn(8, 16)
    torch.manual_seed(3)
    expected = loss_fn(emb(x), LABELS)
    torch.manual_seed(3)
    with torch.autocast(**BF16):
        got = loss_fn(emb(trunk_output(x)), LABELS)
    assert torch.isfinite(got)
    torch.testing.assert_close(got.float(), expected, rtol=3e-2, atol=3e-2)


def test_dvml_heads_and_divergences_stay_in_float32():
    embedder = randomised(DVMLEmbedder(16, 8), std=0.2)
    x = torch.randn(8, 16)
    noise = torch.randn(8, 3, 8)
    expected = embedder(x, num_samples=3, noise=noise)
    with torch.autocast(**BF16):
        got = embedder(x, num_samples=3, noise=noise)
        z_half = embedder(trunk_output(x))
    for name, a, b in zip(expected._fields, got, expected):
        assert a.dtype == torch.float32, name
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=name)
    assert z_half.dtype == torch.float32 and torch.isfinite(z_half).all()

    loss = DVMLLoss(embedder, losses.ContrastiveLoss(), miners.MultiSimilarityMiner(), num_samples=3)
    torch.manual_seed(5)
    terms = loss.terms(x, LABELS, epoch=1)
    torch.manual_seed(5)
    with torch.autocast(**BF16):
        terms_autocast = loss.terms(x, LABELS, epoch=1)
    for name in ("kl_loss", "reconstruction_loss"):
        torch.testing.assert_close(terms_autocast[name], terms[name], rtol=1e-6, atol=1e-7, msg=name)
    for name in ("synthetic_metric_loss", "metric_loss"):  # PML's own losses, under autocast
        assert torch.isfinite(terms_autocast[name])
        torch.testing.assert_close(terms_autocast[name].float(), terms[name], rtol=5e-2, atol=5e-2, msg=name)


def test_dvml_miner_gives_valid_tuples_under_autocast():
    real, synthetic = torch.randn(8, 8), torch.randn(16, 8)
    miner = DVMLMiner(miners.MultiSimilarityMiner(epsilon=0.5))
    with torch.autocast(**BF16):
        a1, p, a2, n = miner(trunk_output(real), LABELS, trunk_output(synthetic), LABELS.repeat_interleave(2))
    assert len(a1) and len(a2)
    assert (LABELS[a1] == LABELS.repeat_interleave(2)[p]).all()
    assert (LABELS[a2] != LABELS.repeat_interleave(2)[n]).all()
