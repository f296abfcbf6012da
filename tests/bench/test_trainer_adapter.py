"""The runner's adapter over PML's trainers (``bench_trainer_class``), with MetricLossOnly,
TrainWithClassifier and DVMLTrainer: an epoch of it is PML's own epoch (the same parameters after
it, in float32), the float16 gradient scaler steps every optimizer, one given loader serves every
epoch, ``fit`` steps epochs through its callbacks, and ``close`` stops the loader's workers."""

import multiprocessing

import pytest
import torch
from pytorch_metric_learning import losses, miners, trainers

from pml_regularizers import DVMLEmbedder, DVMLTrainer
from pml_regularizers.bench.models.precision import AutocastTrunk
from pml_regularizers.bench.protocol.trainer import BenchTrainerMixin, bench_trainer_class

IN, EMB, CLASSES = 12, 6, 4
TRAINERS = [trainers.MetricLossOnly, trainers.TrainWithClassifier, DVMLTrainer]


def dataset():
    g = torch.Generator().manual_seed(1)
    return torch.utils.data.TensorDataset(torch.randn(32, IN, generator=g), torch.arange(32) % CLASSES)


def parts(trainer_class, fp16=False):
    """Models, optimizers, losses and miners of one small setup, seeded."""
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(IN, 16), torch.nn.ReLU())
    trunk.output_size = 16
    embedder = DVMLEmbedder(16, EMB) if trainer_class is DVMLTrainer else torch.nn.Linear(16, EMB)
    models = {"trunk": AutocastTrunk(trunk, "cpu", torch.float16 if fp16 else None, False), "embedder": embedder}
    loss_funcs = {"metric_loss": losses.ProxyAnchorLoss(CLASSES, EMB)}
    if trainer_class is trainers.TrainWithClassifier:
        models["classifier"] = torch.nn.Linear(EMB, CLASSES)
        loss_funcs["classifier_loss"] = torch.nn.CrossEntropyLoss()
    optimizers = {f"{k}_optimizer": torch.optim.SGD(m.parameters(), lr=0.1) for k, m in models.items()}
    optimizers["metric_loss_optimizer"] = torch.optim.SGD(loss_funcs["metric_loss"].parameters(), lr=0.1)
    extra = {"num_samples": 2} if trainer_class is DVMLTrainer else {}
    mining = {"tuple_miner": miners.MultiSimilarityMiner()}
    return dict(models=models, optimizers=optimizers, loss_funcs=loss_funcs, mining_funcs=mining, **extra)


def build(trainer_class, adapted, fp16=False, **adapter_args):
    common = dict(batch_size=8, dataset=dataset(), dataloader_num_workers=0, data_device=torch.device("cpu"))
    cls = bench_trainer_class(trainer_class) if adapted else trainer_class
    return cls(**parts(trainer_class, fp16), **common, **adapter_args)


def state(trainer):
    return {f"{k}.{n}": v.detach().clone() for k, m in trainer.models.items() for n, v in m.state_dict().items()} | {
        f"loss.{n}": v.detach().clone() for n, v in trainer.loss_funcs["metric_loss"].state_dict().items()
    }


@pytest.mark.parametrize("trainer_class", TRAINERS, ids=lambda c: c.__name__)
def test_an_epoch_of_the_adapter_is_pmls_own_epoch(trainer_class):
    results = []
    for adapted in (False, True):
        trainer = build(trainer_class, adapted)
        for epoch in (1, 2):
            torch.manual_seed(100 + epoch)  # as the runner reseeds before each epoch
            if adapted:
                loss = trainer.train_epoch(epoch)
                assert loss == loss and loss > 0  # the epoch's mean total loss, finite
            else:
                trainer.train(start_epoch=epoch, num_epochs=epoch)
        results.append(state(trainer))
    reference, ours = results
    assert reference.keys() == ours.keys()
    for key in reference:
        torch.testing.assert_close(ours[key], reference[key], rtol=0, atol=0, msg=key)
    assert isinstance(build(trainer_class, True), BenchTrainerMixin)
    assert bench_trainer_class(trainer_class).__name__ == f"Bench{trainer_class.__name__}"
    assert bench_trainer_class(trainer_class) is bench_trainer_class(trainer_class)


@pytest.mark.parametrize("trainer_class", TRAINERS, ids=lambda c: c.__name__)
def test_fp16_steps_every_optimizer_through_the_scaler(trainer_class):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    trainer = build(trainer_class, True, fp16=True, grad_scaler=scaler)
    stepped = []
    original = scaler.step
    scaler.step = lambda optimizer, *a, **k: (stepped.append(optimizer), original(optimizer, *a, **k))[1]
    before = state(trainer)
    trainer.train_epoch(1)
    with_gradients = {id(o) for o in trainer.optimizers.values()}
    assert {id(o) for o in stepped} == with_gradients
    after = state(trainer)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_one_given_loader_serves_every_epoch():
    loader = torch.utils.data.DataLoader(dataset(), batch_size=8, shuffle=True, drop_last=True)
    trainer = build(trainers.MetricLossOnly, True, loader=loader)
    for epoch in (1, 2):
        trainer.train_epoch(epoch)
        assert trainer.dataloader is loader and trainer.iterations_per_epoch == 4


def test_fit_steps_epochs_through_its_callbacks_and_stops_when_told():
    trainer = build(trainers.MetricLossOnly, True)
    calls = []
    trainer.fit(
        3,
        10,
        lambda epoch: calls.append(("before", epoch)),
        lambda epoch, loss: calls.append(("after", epoch)) or epoch == 4,
    )
    assert calls == [("before", 3), ("after", 3), ("before", 4), ("after", 4)]


def test_close_stops_the_workers_of_a_persistent_loader():
    loader = torch.utils.data.DataLoader(
        dataset(), batch_size=8, shuffle=True, drop_last=True, num_workers=2, persistent_workers=True
    )
    trainer = build(trainers.MetricLossOnly, True, loader=loader)
    trainer.train_epoch(1)
    assert len(multiprocessing.active_children()) == 2
    del loader
    trainer.close()
    assert multiprocessing.active_children() == []
