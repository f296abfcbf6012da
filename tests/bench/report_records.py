"""Records and experiment folders with known numbers, for the tests of the report modules."""

import json

import torch

MAP = "mean_average_precision_at_r"
P1 = "precision_at_1"

# MAP@R per seed; "reg" has an extra seed 3 that the baseline lacks
BASE_MAP = {0: 0.40, 1: 0.42, 2: 0.44}
REG_MAP = {0: 0.43, 1: 0.44, 2: 0.47, 3: 0.50}


def fake_records():
    """Test and val records of "base" (seeds 0-2) and "reg" (seeds 0-3), one embedding."""
    records = []
    for name, maps in [("base", BASE_MAP), ("reg", REG_MAP)]:
        for seed, value in maps.items():
            metrics = {MAP: value, P1: 0.6 + seed / 100}
            records.append(
                {"experiment": name, "seed": seed, "split": "test", "embedding": "concatenated", "metrics": metrics}
            )
            records.append(
                {"experiment": name, "seed": seed, "split": "val", "embedding": "concatenated", "metrics": {MAP: 0.99}}
            )
    return records


def write_experiment(root, name, records, csv_texts=(), embeddings=None, **results):
    """An experiment folder ``root/name`` holding ``records`` (``results`` adds keys to its
    results.json), one loss_histories.csv per text (seed 0, 1, ...) and seed 0's test embeddings."""
    exp = root / name
    exp.mkdir()
    body = [{k: v for k, v in r.items() if k != "experiment"} for r in records]
    (exp / "results.json").write_text(json.dumps({"experiment": name, "config": {}, "records": body, **results}))
    for seed, text in enumerate(csv_texts):
        logs = exp / f"seed_{seed}" / "logs"
        logs.mkdir(parents=True)
        (logs / "loss_histories.csv").write_text(text)
    if embeddings is not None:
        torch.save(embeddings, exp / "seed_0" / "test_embeddings.pt")
    return exp


def write_val_log(exp, seed, fold, values):
    """A fold's validation log as PML's tester writes it, with ``values`` as MAP@R per epoch."""
    logs = exp / f"seed_{seed}" / f"fold_{fold}" / "logs"
    logs.mkdir(parents=True)
    rows = "".join(f"{e},{e},{v},{e},{v}\n" for e, v in enumerate(values, start=1))
    (logs / "accuracies_normalized_GlobalEmbeddingSpaceTester_level_0_VAL_vs_self.csv").write_text(
        "~iteration~,epoch,mean_average_precision_at_r_level0,best_epoch,best_accuracy\n" + rows
    )
