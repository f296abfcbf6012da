"""DVMLTrainer end to end through PML's own machinery (GlobalEmbeddingSpaceTester, logging_presets
hooks writing through record-keeper), the same loss values as the plain-loop DVMLLoss on the same
batch and seed, the phase following the epoch numbers given to train(), and its input checks."""

import copy
import csv

import pytest
import torch
from pytorch_metric_learning import losses, miners

from pml_regularizers import DVMLEmbedder, DVMLLoss, DVMLMiner, DVMLTrainer

from .e2e import blobs

TERMS = ["kl_loss", "reconstruction_loss", "synthetic_metric_loss", "metric_loss"]


def make_trainer(dataset, miner=None, batch_size=32, **kwargs):
    trunk = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU())
    embedder = DVMLEmbedder(in_features=32, out_features=8)
    models = {"trunk": trunk, "embedder": embedder}
    optimizers = {
        "trunk_optimizer": torch.optim.Adam(trunk.parameters(), 1e-3),
        "embedder_optimizer": torch.optim.Adam(embedder.parameters(), 1e-3),
    }
    defaults = dict(
        batch_size=batch_size,
        loss_funcs={"metric_loss": losses.TripletMarginLoss(margin=0.2)},
        mining_funcs={} if miner is None else {"tuple_miner": miner},
        dataset=dataset,
        dataloader_num_workers=0,
        num_samples=5,
    )
    defaults.update(kwargs)
    return DVMLTrainer(models=models, optimizers=optimizers, **defaults)


@pytest.mark.slow
def test_one_epoch_with_tester_and_record_keeper(tmp_path, pml_logging):
    train, val = blobs(8, 16, 16, 0), blobs(4, 16, 16, 1)
    logging = pml_logging(val)
    hooks, tester = logging.hooks, logging.tester
    miner = DVMLMiner(miners.MultiSimilarityMiner(epsilon=0.1), collect_stats=True)
    trainer = make_trainer(
        train, miner, end_of_iteration_hook=hooks.end_of_iteration_hook, end_of_epoch_hook=logging.end_of_epoch_hook
    )
    assert trainer.mining_funcs["synthetic_tuple_miner"] is miner
    assert isinstance(trainer.mining_funcs["tuple_miner"], miners.MultiSimilarityMiner)
    trainer.train(num_epochs=1)

    csv_files = {p.name: p for p in (tmp_path / "logs").glob("*.csv")}
    loss_csv = [p for n, p in csv_files.items() if n.startswith("loss_histories")]
    with open(loss_csv[0]) as f:
        rows = list(csv.DictReader(f))
    assert rows and set(TERMS + ["total_loss"]) <= set(rows[0])
    for k in TERMS:
        assert float(rows[0][k]) > 0, k
    total = sum(float(rows[0][k]) for k in TERMS)
    assert float(rows[0]["total_loss"]) == pytest.approx(total, rel=1e-5)
    weights_csv = [p for n, p in csv_files.items() if n.startswith("loss_weights")]
    with open(weights_csv[0]) as f:
        weights = next(csv.DictReader(f))
    assert [float(weights[k]) for k in TERMS] == [1.0, 1.0, 0.1, 1.0]  # phase 1
    miner_csv = [p for n, p in csv_files.items() if "synthetic_tuple_miner" in n]
    with open(miner_csv[0]) as f:
        stats = next(csv.DictReader(f))
    assert int(float(stats["num_pos_pairs"])) > 0

    acc = hooks.get_accuracy_history(tester, "val", return_all_metrics=True)
    assert 0.0 < acc["precision_at_1_level0"][-1] <= 1.0
    emb = tester.get_all_embeddings(val, trainer.models["trunk"], trainer.models["embedder"])[0]
    assert emb.shape == (len(val), 8)  # the tester sees z_I


@pytest.mark.parametrize("epoch", [1, 2])
@pytest.mark.slow
def test_same_loss_values_as_the_plain_loop_module(epoch):
    data = blobs(6, 8, 16, 2)
    logged = {}
    trainer = make_trainer(
        data,
        miners.TripletMarginMiner(margin=0.3),
        batch_size=48,
        sampler=torch.utils.data.SequentialSampler(data),
        iterations_per_epoch=1,
        end_of_iteration_hook=lambda t: logged.update({k: float(v) for k, v in t.losses.items()}),
    )
    models = copy.deepcopy(trainer.models)
    captured = {}
    get_batch = trainer.get_batch

    def seeded_batch():
        captured["batch"] = get_batch()
        torch.manual_seed(123)
        return captured["batch"]

    trainer.get_batch = seeded_batch
    trainer.train(start_epoch=epoch, num_epochs=epoch)

    x, labels = captured["batch"]
    plain = DVMLLoss(
        models["embedder"], losses.TripletMarginLoss(margin=0.2), miners.TripletMarginMiner(margin=0.3), num_samples=5
    )
    torch.manual_seed(123)
    total = plain(models["trunk"](x), labels, epoch)
    weights = plain.weights(epoch)
    for k in TERMS:
        assert logged[k] == pytest.approx(weights[k] * plain.last_terms[k], rel=1e-6), k
        assert plain.last_terms[k] > 0, k
    assert logged["total_loss"] == pytest.approx(total.item(), rel=1e-6)


def test_phase_follows_the_epoch_numbers_given_to_train():
    data = blobs(4, 8, 16, 3)
    base = {"kl_loss": 2.0, "reconstruction_loss": 1.0, "synthetic_metric_loss": 1.0, "metric_loss": 0.5}
    trainer = make_trainer(data, iterations_per_epoch=1, phase2_start_epoch=3, loss_weights=dict(base))
    phase1, phase2 = [1.0, 1.0, 0.1, 1.0], [0.8, 1.0, 0.2, 0.8]
    for epoch, phase in [(3, phase2), (1, phase1), (2, phase1), (7, phase2)]:
        trainer.train(start_epoch=epoch, num_epochs=epoch)
        assert trainer.phase == (1 if phase is phase1 else 2)
        expected = [base[k] * w for k, w in zip(TERMS, phase)]
        assert [trainer.loss_weights[k] for k in TERMS] == pytest.approx(expected)


def test_the_callers_loss_weights_are_left_as_given():
    """The trainers of several folds share one loss_weights dict: a trainer that trained in phase 2
    leaves it as it was, so the next one starts from the same base weights."""
    data = blobs(4, 8, 16, 3)
    given = {"kl_loss": 0.5, "reconstruction_loss": 1.0, "synthetic_metric_loss": 1.0, "metric_loss": 1.0}
    first = make_trainer(data, iterations_per_epoch=1, phase2_start_epoch=2, loss_weights=given)
    first.train(start_epoch=1, num_epochs=2)
    assert first.loss_weights["kl_loss"] == pytest.approx(0.5 * 0.8)  # phase 2
    assert given == {"kl_loss": 0.5, "reconstruction_loss": 1.0, "synthetic_metric_loss": 1.0, "metric_loss": 1.0}
    second = make_trainer(data, iterations_per_epoch=1, phase2_start_epoch=2, loss_weights=given)
    second.train(start_epoch=1, num_epochs=1)
    assert second.loss_weights["kl_loss"] == pytest.approx(0.5)  # phase 1, from the base weight


def test_plain_miner_is_wrapped_and_compute_embeddings_gives_z_I():
    data = blobs(4, 8, 16, 4)
    plain = miners.TripletMarginMiner(margin=0.2)
    trainer = make_trainer(data, plain, iterations_per_epoch=1)
    assert trainer.mining_funcs["tuple_miner"] is plain
    wrapped = trainer.mining_funcs["synthetic_tuple_miner"]
    assert isinstance(wrapped, DVMLMiner) and isinstance(wrapped.miner, miners.TripletMarginMiner)
    assert wrapped.miner is not plain
    trainer.train(num_epochs=1)
    x = data.tensors[0][:5]
    z = trainer.compute_embeddings(x)
    torch.testing.assert_close(z, trainer.models["embedder"].encode(trainer.models["trunk"](x))[0])


def test_errors():
    data = blobs(4, 8, 16, 5)
    trunk = torch.nn.Linear(16, 32)
    opts = {"trunk_optimizer": torch.optim.SGD(trunk.parameters(), 0.1)}
    loss_funcs = {"metric_loss": losses.ContrastiveLoss()}
    common = dict(optimizers=opts, batch_size=8, dataset=data, dataloader_num_workers=0)
    with pytest.raises(ValueError, match="models must be a dict with 'trunk' and 'embedder'"):
        DVMLTrainer(models={"trunk": trunk}, loss_funcs=loss_funcs, **common)
    with pytest.raises(ValueError, match="embedder must be a DVMLEmbedder"):
        DVMLTrainer(models={"trunk": trunk, "embedder": torch.nn.Linear(32, 8)}, loss_funcs=loss_funcs, **common)
    models = {"trunk": trunk, "embedder": DVMLEmbedder(32, 8)}
    with pytest.raises(ValueError, match="loss_funcs must be a dict with 'metric_loss'"):
        DVMLTrainer(models=models, loss_funcs={"other": losses.ContrastiveLoss()}, **common)
    with pytest.raises(ValueError, match=r"num_samples \(T\) must be an int >= 1"):
        DVMLTrainer(models=models, loss_funcs=loss_funcs, num_samples=0, **common)
    with pytest.raises(ValueError, match="phase2_weights must be a sequence of 4 numbers"):
        DVMLTrainer(models=models, loss_funcs=loss_funcs, phase2_weights=(1, 1), **common)
    with pytest.raises(ValueError, match="mining_funcs keys must be among"):
        DVMLTrainer(
            models=models, loss_funcs=loss_funcs, mining_funcs={"miner": miners.MultiSimilarityMiner()}, **common
        )
    with pytest.raises(ValueError, match="in_features=32"):
        bad = {"trunk": torch.nn.Linear(16, 20), "embedder": DVMLEmbedder(32, 8)}
        DVMLTrainer(models=bad, loss_funcs=loss_funcs, **common).train(num_epochs=1)
