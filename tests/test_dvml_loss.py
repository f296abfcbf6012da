"""DVMLLoss: the phases' stop-gradient (reconstruction gradients exactly zero on the heads and the
trunk in phase 1, non-zero everywhere in phase 2), the four terms against direct computations with
PML's own losses and miners, the phase weights, the miner wiring and the input checks."""

import pytest
import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper

from pml_regularizers import DVMLEmbedder, DVMLLoss, DVMLMiner
from pml_regularizers import functional as F
from pml_regularizers.losses.dvml_loss import split_miners, takes_reference

IN, EMB, T, B = 10, 4, 3, 12


def setup(loss=None, miner=None, **kwargs):
    trunk = torch.nn.Sequential(torch.nn.Linear(6, IN), torch.nn.ReLU())
    embedder = DVMLEmbedder(IN, EMB, decoder_hidden=8)
    dvml = DVMLLoss(embedder, loss or losses.TripletMarginLoss(margin=0.2), miner, num_samples=T, **kwargs)
    x = torch.randn(B, 6)
    labels = torch.arange(B) % 3
    return trunk, embedder, dvml, x, labels


def grads(value, params):
    return [
        torch.zeros_like(p) if g is None else g
        for p, g in zip(params, torch.autograd.grad(value, params, allow_unused=True, retain_graph=True))
    ]


@pytest.mark.parametrize("epoch, phase", [(1, 1), (2, 2), (5, 2)])
def test_reconstruction_gradient_reaches_encoder_and_trunk_only_in_phase_2(epoch, phase):
    trunk, embedder, dvml, x, labels = setup(phase2_start_epoch=2)
    assert dvml.phase(epoch) == phase
    recon = dvml.terms(trunk(x), labels, epoch)["reconstruction_loss"]
    decoder = grads(recon, list(embedder.decoder.parameters()))
    heads = grads(recon, list(embedder.heads.parameters()))
    trunk_grads = grads(recon, list(trunk.parameters()))
    assert all(bool(g.abs().sum() > 0) for g in decoder)
    if phase == 1:
        assert all(bool((g == 0).all()) for g in heads + trunk_grads)
    else:
        assert all(bool(g.abs().sum() > 0) for g in trunk_grads)
        weight_grad = heads[0]  # rows [z_I | mu | log sigma^2]: each head gets gradient
        assert all(bool(chunk.abs().sum() > 0) for chunk in weight_grad.chunk(3, dim=0))


def test_other_terms_reach_the_trunk_in_both_phases():
    trunk, embedder, dvml, x, labels = setup()
    for epoch in (1, 2):
        terms = dvml.terms(trunk(x), labels, epoch)
        for name in ("kl_loss", "synthetic_metric_loss", "metric_loss"):
            assert all(bool(g.abs().sum() > 0) for g in grads(terms[name], list(trunk.parameters()))), name


@pytest.mark.parametrize("dimension_mean", [False, True])
def test_terms_match_direct_computation(dimension_mean):
    miner = miners.TripletMarginMiner(margin=0.5)
    loss = losses.TripletMarginLoss(margin=0.2)
    trunk, embedder, dvml, x, labels = setup(loss, miner, dimension_mean=dimension_mean)
    features = trunk(x)
    noise = torch.randn(B, T, EMB)
    terms = dvml.terms(features, labels, 2, noise=noise)

    z, mu, logvar = embedder.encode(features)
    sigma = torch.exp(0.5 * logvar)
    samples = (z + mu).repeat_interleave(T, 0) + sigma.repeat_interleave(T, 0) * noise.reshape(B * T, EMB)
    sample_labels = labels.repeat_interleave(T)
    kl = (
        torch.distributions.kl_divergence(
            torch.distributions.Normal(mu, torch.exp(0.5 * logvar)), torch.distributions.Normal(0.0, 1.0)
        )
        .sum(1)
        .mean()
    )
    recon = ((embedder.decoder(samples) - features.repeat_interleave(T, 0)) ** 2).sum(1).mean()
    if dimension_mean:  # means over the embedding and feature dimensions instead of sums
        kl, recon = kl / EMB, recon / features.shape[1]
    tuples = DVMLMiner(miners.TripletMarginMiner(margin=0.5))(z, labels, samples, sample_labels)
    expected = {
        "kl_loss": kl,
        "reconstruction_loss": recon,
        "synthetic_metric_loss": loss(z, labels, tuples, samples, sample_labels),
        "metric_loss": loss(z, labels, miner(z, labels)),
    }
    assert set(terms) == set(expected)
    for k in expected:
        torch.testing.assert_close(terms[k], expected[k], rtol=1e-5, atol=1e-6, msg=k)
    assert terms["synthetic_metric_loss"].item() > 0 and terms["metric_loss"].item() > 0


@pytest.mark.parametrize(
    "loss, kwargs",
    [
        # a loss that refuses ref_emb: synthetic_reference defaults to False
        (losses.ProxyAnchorLoss(num_classes=3, embedding_size=EMB), {}),
        # any loss, told so explicitly
        (losses.TripletMarginLoss(margin=0.2), {"synthetic_reference": False}),
    ],
    ids=["ProxyAnchor-default", "Triplet-explicit"],
)
def test_without_references_the_synthetic_loss_gets_the_samples_alone(loss, kwargs):
    trunk, embedder, dvml, x, labels = setup(loss, **kwargs)
    assert dvml.synthetic_reference is False
    features = trunk(x)
    noise = torch.randn(B, T, EMB)
    value = dvml.terms(features, labels, 1, noise=noise)["synthetic_metric_loss"]
    z, mu, logvar = embedder.encode(features)
    samples = F.reparameterized_samples(z, mu, logvar, T, noise)
    torch.testing.assert_close(value, loss(samples, labels.repeat_interleave(T)))
    with pytest.raises(ValueError, match="synthetic_reference must be True, False or None"):
        DVMLLoss(embedder, loss, synthetic_reference="auto")


def test_the_embedder_is_held_by_reference_and_the_metric_loss_owned():
    """As JacobianDeterminantLoss does: the loss's parameters and state are the metric loss's
    (ProxyAnchor's proxies), never the embedder's, which the user's optimizer trains."""
    loss = losses.ProxyAnchorLoss(num_classes=3, embedding_size=EMB)
    trunk, embedder, dvml, x, labels = setup(loss)
    assert dvml.embedder is embedder
    assert [id(p) for p in dvml.parameters()] == [id(loss.proxies)]
    assert set(dvml.state_dict()) == {f"loss.{k}" for k in loss.state_dict()}
    dvml.terms(trunk(x), labels, 1)["metric_loss"].backward()
    assert embedder.heads.weight.grad is not None  # the embedder still trains through the terms


def _pml_losses():
    """Every PML metric loss class, with the arguments it needs here."""
    needs = {
        "HistogramLoss": {"n_bins": 10},
        "ManifoldLoss": {"l": EMB},
        "P2SGradLoss": {"descriptors_dim": EMB, "num_classes": 3},
        "RankedListLoss": {"margin": 0.4, "Tn": 1.0},
    }
    return [
        pytest.param(cls, needs.get(name, {}), id=name)
        for name, cls in sorted(vars(losses).items())
        if isinstance(cls, type)
        and issubclass(cls, losses.BaseMetricLossFunction)
        and cls not in (losses.BaseMetricLossFunction, losses.GenericPairLoss)
    ]


@pytest.mark.parametrize("cls, kwargs", _pml_losses())
def test_the_table_of_losses_without_references_matches_what_pml_accepts(cls, kwargs):
    """NO_REFERENCE_LOSSES holds exactly the PML losses that refuse reference embeddings or
    tuples: found here by calling each with them, so a PML release that changes this fails."""
    try:
        loss = cls(**{"num_classes": 3, "embedding_size": EMB, **kwargs})
    except TypeError:  # a loss without class weights
        loss = cls(**kwargs)
    g = torch.Generator().manual_seed(0)
    emb, ref = torch.randn(6, EMB, generator=g), torch.randn(12, EMB, generator=g)
    labels, ref_labels = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 2] * 4)
    tuples = (torch.tensor([0, 2]), torch.tensor([0, 1]), torch.tensor([1, 0]))
    try:
        loss(emb, labels, tuples, ref, ref_labels)
    except ValueError as err:
        accepted = "not supported" not in str(err)
        if accepted:
            raise
    else:
        accepted = True
    assert takes_reference(loss) is accepted
    assert takes_reference(DistributedLossWrapper(loss)) is accepted


@pytest.mark.parametrize("switch", [1, 3])
def test_forward_weights_the_terms_by_phase(switch):
    trunk, embedder, dvml, x, labels = setup(phase2_start_epoch=switch, phase1_weights=(0.5, 2.0, 0.25, 3.0))
    features = trunk(x)
    noise = torch.randn(B, T, EMB)
    for epoch in (1, 2, 3, 4):
        weights = (0.5, 2.0, 0.25, 3.0) if epoch < switch else (0.8, 1.0, 0.2, 0.8)
        total = dvml(features, labels, epoch, noise=noise)
        terms = dvml.terms(features, labels, epoch, noise=noise)
        assert dvml.last_terms == pytest.approx({k: v.item() for k, v in terms.items()}, rel=1e-6)
        expected = sum(
            w * terms[k]
            for w, k in zip(weights, ["kl_loss", "reconstruction_loss", "synthetic_metric_loss", "metric_loss"])
        )
        torch.testing.assert_close(total, expected)
        assert dvml.weights(epoch) == dict(
            zip(["kl_loss", "reconstruction_loss", "synthetic_metric_loss", "metric_loss"], weights)
        )


def test_miner_wiring():
    plain = miners.MultiSimilarityMiner()
    real, synthetic = split_miners(plain, None)
    assert real is plain and isinstance(synthetic, DVMLMiner)
    assert isinstance(synthetic.miner, miners.MultiSimilarityMiner) and synthetic.miner is not plain

    dvml_miner = DVMLMiner(miners.TripletMarginMiner(margin=0.1))
    real, synthetic = split_miners(dvml_miner, None)
    assert synthetic is dvml_miner and isinstance(real, miners.TripletMarginMiner)
    assert real is not dvml_miner.miner and real.margin == 0.1

    real, synthetic = split_miners(None, None)
    assert real is None and isinstance(synthetic, DVMLMiner) and synthetic.miner is None
    real, synthetic = split_miners(DVMLMiner(), None)
    assert real is None

    explicit = DVMLMiner(exclude_own_samples=False)
    assert split_miners(plain, explicit) == (plain, explicit)

    for efficient in (False, True):
        wrapped = DistributedMinerWrapper(plain, efficient=efficient)
        real, synthetic = split_miners(wrapped, None)
        assert real is wrapped and isinstance(synthetic, DistributedMinerWrapper)
        assert synthetic.efficient is efficient  # the wrapper's settings carry over
        assert isinstance(synthetic.miner, DVMLMiner)
        assert isinstance(synthetic.miner.miner, miners.MultiSimilarityMiner)
        real, synthetic = split_miners(DistributedMinerWrapper(DVMLMiner(plain), efficient=efficient), None)
        assert isinstance(real, DistributedMinerWrapper) and real.efficient is efficient
        assert isinstance(real.miner, miners.MultiSimilarityMiner) and real.miner is not plain

    with pytest.raises(ValueError, match="synthetic_miner must be a DVMLMiner"):
        split_miners(None, plain)
    with pytest.raises(ValueError, match="plain PML miner when synthetic_miner is given"):
        split_miners(dvml_miner, explicit)
    with pytest.raises(ValueError, match="miner must be a PML BaseMiner"):
        split_miners(torch.nn.Identity(), None)


def test_errors():
    embedder = DVMLEmbedder(IN, EMB)
    loss = losses.ContrastiveLoss()
    with pytest.raises(ValueError, match="embedder must be a DVMLEmbedder"):
        DVMLLoss(torch.nn.Linear(IN, EMB), loss)
    with pytest.raises(ValueError, match="loss must be a PML metric loss"):
        DVMLLoss(embedder, "triplet")
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match=r"num_samples \(T\) must be an int >= 1"):
            DVMLLoss(embedder, loss, num_samples=bad)
    with pytest.raises(ValueError, match="phase2_start_epoch must be an int >= 1"):
        DVMLLoss(embedder, loss, phase2_start_epoch=0)
    for bad in [(1, 1, 1), (1, 1, -0.1, 1), (1, float("nan"), 1, 1), "abcd", 1.0]:
        with pytest.raises(ValueError, match=r"phase1_weights(\[1\])? must be"):
            DVMLLoss(embedder, loss, phase1_weights=bad)
    # a string of 4 digits is not 4 weights (it used to be read character by character)
    for bad in ["1111", b"1111"]:
        with pytest.raises(ValueError, match="phase2_weights must be a sequence of 4 numbers .* got a string"):
            DVMLLoss(embedder, loss, phase2_weights=bad)
    with pytest.raises(ValueError, match=r"phase1_weights\[2\] must be a finite real number, got '0.1'"):
        DVMLLoss(embedder, loss, phase1_weights=(1, 1, "0.1", 1))
    with pytest.raises(ValueError, match="dimension_mean must be True or False"):
        DVMLLoss(embedder, loss, dimension_mean="yes")
    dvml = DVMLLoss(embedder, loss, num_samples=2)
    with pytest.raises(ValueError, match="epoch must be an int >= 1"):
        dvml(torch.randn(4, IN), torch.arange(4), 0)
    with pytest.raises(ValueError, match="one label per row of features"):
        dvml(torch.randn(4, IN), torch.arange(3), 1)
    with pytest.raises(ValueError, match=f"in_features={IN}"):
        dvml(torch.randn(4, IN + 1), torch.arange(4), 1)
    with pytest.raises(
        ValueError, match=rf"features must be a 2-D tensor with at least one row, got torch.Size\(\[0, {IN}\]\)"
    ):
        dvml(torch.randn(0, IN), torch.arange(0), 1)
    with pytest.raises(ValueError, match="features must be a 2-D tensor with at least one row, got list"):
        dvml([[0.0] * IN], torch.arange(1), 1)
