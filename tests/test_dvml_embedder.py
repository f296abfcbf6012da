"""DVMLEmbedder and DVML's functional pieces against independent references: the KL term against
torch.distributions' closed form, the reconstruction term against explicit loops, the synthetic
samples' moments against z_I + mu and sigma^2, and the embedder's input checks."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pml_regularizers import DVMLEmbedder
from pml_regularizers import functional as F
from pml_regularizers.embedders import DVMLOutput

from .conftest import TEST_DTYPES, rtol_for


@pytest.mark.parametrize("dtype", TEST_DTYPES)
def test_kl_matches_torch_distributions(dtype):
    mu = torch.randn(7, 5, dtype=torch.float64)
    logvar = torch.randn(7, 5, dtype=torch.float64)
    ours = F.gaussian_kl_to_standard_normal(mu.to(dtype), logvar.to(dtype))
    reference = kl_divergence(
        Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ).sum(dim=1)
    assert ours.shape == (7,) and ours.dtype == dtype
    torch.testing.assert_close(ours.double(), reference, rtol=rtol_for(dtype), atol=rtol_for(dtype))


def test_kl_is_zero_exactly_at_the_prior():
    zeros = torch.zeros(3, 4, dtype=torch.float64)
    assert torch.equal(F.gaussian_kl_to_standard_normal(zeros, zeros), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", TEST_DTYPES)
def test_reconstruction_error_matches_explicit_loops(dtype):
    rows, draws, features = 4, 3, 6
    target = torch.randn(rows, features, dtype=torch.float64)
    recon = torch.randn(rows * draws, features, dtype=torch.float64)
    total = 0.0
    for i in range(rows):
        for t in range(draws):
            total += sum((float(target[i, f]) - float(recon[i * draws + t, f])) ** 2 for f in range(features))
    reference = total / (rows * draws)
    ours = F.reconstruction_error(target.to(dtype), recon.to(dtype))
    assert ours.dtype == dtype
    assert math.isclose(float(ours), reference, rel_tol=rtol_for(dtype))


def test_samples_are_source_major_and_follow_the_formula():
    center, mu, logvar = (torch.randn(3, 2, dtype=torch.float64) for _ in range(3))
    noise = torch.randn(3, 4, 2, dtype=torch.float64)
    samples = F.reparameterized_samples(center, mu, logvar, 4, noise)
    assert samples.shape == (12, 2)
    for i in range(3):
        for t in range(4):
            expected = center[i] + mu[i] + torch.exp(0.5 * logvar[i]) * noise[i, t]
            torch.testing.assert_close(samples[i * 4 + t], expected, rtol=0, atol=1e-15)


def test_sample_moments_match_center_plus_mu_and_sigma_squared():
    torch.manual_seed(1)
    emb = DVMLEmbedder(in_features=6, out_features=3).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    with torch.no_grad():
        z, mu, logvar = emb.encode(x)
        draws = 20_000
        samples = emb.sample(z, mu, logvar, draws).view(5, draws, 3)
    var = logvar.exp()
    mean_err = samples.mean(dim=1) - (z + mu)
    # 5 standard errors: sigma / sqrt(T) for the mean, sigma^2 sqrt(2 / (T - 1)) for the variance
    assert bool((mean_err.abs() <= 5 * var.sqrt() / math.sqrt(draws)).all()), mean_err
    var_err = samples.var(dim=1) - var
    assert bool((var_err.abs() <= 5 * var * math.sqrt(2 / (draws - 1))).all()), var_err
    # and the sample really varies: the check above is not passed by a zero-variance sampler
    assert bool((samples.var(dim=1) > 0.5 * var).all())


def test_forward_returns_the_invariant_embedding_in_train_and_eval_mode():
    emb = DVMLEmbedder(in_features=8, out_features=4)
    x = torch.randn(6, 8)
    z, _, _ = emb.encode(x)
    for mode in (True, False):
        emb.train(mode)
        out = emb(x)
        assert isinstance(out, torch.Tensor) and out.shape == (6, 4)
        torch.testing.assert_close(out, z)
    assert emb.out_features == 4 and emb.in_features == 8


def test_full_step_output():
    emb = DVMLEmbedder(in_features=8, out_features=4, decoder_hidden=16)
    x = torch.randn(6, 8)
    noise = torch.randn(6, 3, 4)
    out = emb(x, num_samples=3, noise=noise)
    assert isinstance(out, DVMLOutput)
    z, mu, logvar = emb.encode(x)
    torch.testing.assert_close(out.samples, F.reparameterized_samples(z, mu, logvar, 3, noise))
    torch.testing.assert_close(out.reconstruction, emb.decoder(out.samples))
    assert out.reconstruction.shape == (18, 8)


def test_functional_pieces_reject_mismatched_shapes():
    mu, logvar = torch.zeros(5, 4), torch.zeros(5, 4)
    with pytest.raises(ValueError, match=r"mu and logvar must have the same shape, got \(2, 3\) and \(3,\)"):
        F.gaussian_kl_to_standard_normal(torch.zeros(2, 3), torch.zeros(3))
    for bad in (0, -1):
        with pytest.raises(ValueError, match=r"num_samples \(T\) must be an int >= 1"):
            F.reparameterized_samples(mu, mu, logvar, bad)
        with pytest.raises(ValueError, match=r"num_samples \(T\) must be an int >= 1"):
            F.draw_aligned_triplets(torch.arange(4), bad)
    with pytest.raises(ValueError, match=r"mu must be 2-D with shape \(B, D\)"):
        F.reparameterized_samples(mu[0], mu[0], logvar[0], 2)
    with pytest.raises(ValueError, match=r"center must have mu's shape \(5, 4\), got \(5, 3\)"):
        F.reparameterized_samples(mu[:, :3], mu, logvar, 2)
    with pytest.raises(ValueError, match=r"noise must have shape \(B, T, D\) = \(5, 2, 4\)"):
        F.reparameterized_samples(mu, mu, logvar, 2, torch.zeros(5, 3, 4))
    with pytest.raises(ValueError, match="noise must be torch.float32"):
        F.reparameterized_samples(mu, mu, logvar, 2, torch.zeros(5, 2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"reconstruction must have shape \(B \* T, F\) with B = 5 and F = 4"):
        F.reconstruction_error(mu, torch.zeros(7, 4))
    with pytest.raises(ValueError, match="reconstruction must have shape"):
        F.reconstruction_error(mu, torch.zeros(10, 3))
    with pytest.raises(ValueError, match=r"target must be 2-D with shape \(B, F\)"):
        F.reconstruction_error(torch.zeros(4), torch.zeros(8, 1))
    with pytest.raises(ValueError, match=r"labels must be 1-D with shape \(B,\)"):
        F.draw_aligned_triplets(torch.zeros(2, 2), 2)


def test_input_errors():
    emb = DVMLEmbedder(in_features=8, out_features=4)
    with pytest.raises(ValueError, match=r"x must be trunk features of shape \(B, in_features=8\)"):
        emb(torch.randn(5, 7))
    with pytest.raises(ValueError, match="in_features=8"):
        emb(torch.randn(5, 7), num_samples=2)
    with pytest.raises(ValueError, match="in_features=8"):
        emb.encode(torch.randn(8))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=r"num_samples \(T\) must be an int >= 1"):
            emb(torch.randn(5, 8), num_samples=bad)
    z, mu, logvar = emb.encode(torch.randn(5, 8))
    with pytest.raises(ValueError, match="num_samples"):
        emb.sample(z, mu, logvar, 0)
    with pytest.raises(ValueError, match="noise must have shape"):
        emb.sample(z, mu, logvar, 2, noise=torch.randn(5, 3, 4))
    with pytest.raises(ValueError, match="logvar must have mu's shape"):
        emb.sample(z, mu, logvar[:3], 2)
    with pytest.raises(ValueError, match="noise needs num_samples"):
        emb(torch.randn(5, 8), noise=torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match="invariant must have mu's shape"):
        emb.sample(z[:3], mu, logvar, 2)
    with pytest.raises(ValueError, match="x must have a floating-point dtype, got torch.int64"):
        emb(torch.zeros(5, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"z must have shape \(N, out_features=4\)"):
        emb.decode(torch.randn(5, 3))
    for kwargs in (
        {"in_features": 0, "out_features": 4},
        {"in_features": 8, "out_features": 2.5},
        {"in_features": 8, "out_features": 4, "decoder_hidden": 0},
    ):
        with pytest.raises(ValueError, match="must be a positive int"):
            DVMLEmbedder(**kwargs)
