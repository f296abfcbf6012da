"""Import ``pml_regularizers`` and each of its core modules, and run every public class once.

A script, run by ``tests/test_dependencies.py`` in a separate interpreter that lacks the bench
and vision extras. Options:

``--refuse-extras``
    First make the extras' modules unimportable (a ``sys.meta_path`` finder that raises
    ModuleNotFoundError for them), as in an environment where they are not installed.
``--cli``
    Instead of the smoke run, run ``pml-bench run`` (``python -m pml_regularizers.bench run``) and
    exit with its status.

On success it prints ``core ok: <modules>`` (the core modules it imported, comma-separated).
"""

from __future__ import annotations

import importlib
import importlib.abc
import runpy
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# The modules of the bench and vision extras that the core must not need. scipy, which the bench
# extra also lists, is not among them: PML imports scipy.stats itself (utils/common_functions.py),
# and has it through its scikit-learn requirement.
EXTRA_MODULES = (
    "record_keeper",
    "tensorboard",
    "faiss",
    "PIL",
    "hydra",
    "omegaconf",
    "matplotlib",
    "torchvision",
    "timm",
    "safetensors",
)


class RefuseExtras(importlib.abc.MetaPathFinder):
    """A finder, first on ``sys.meta_path``, that reports the extras' modules as not installed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in EXTRA_MODULES:
            raise ModuleNotFoundError(f"No module named {fullname!r} (refused by the test)", name=fullname)
        return None


def core_module_names() -> list[str]:
    """The package and every module of it outside ``pml_regularizers.bench``, from its files."""
    import pml_regularizers

    root = Path(pml_regularizers.__file__).parent
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[0] == "bench":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(("pml_regularizers", *parts)))
    return names


def run_public_classes() -> None:
    """Build each public class of the package and compute a forward or a loss with it."""
    import torch
    from pytorch_metric_learning import losses, miners

    import pml_regularizers as pr

    torch.manual_seed(0)
    x = torch.randn(12, 6)
    labels = torch.arange(4).repeat_interleave(3)

    proxy = losses.ProxyAnchorLoss(4, 6, weight_regularizer=pr.SkewedMeanRegularizer(lam=4.0))
    _finite("SkewedMeanRegularizer", proxy(x, labels))
    _finite("functional.skewed_mean", pr.functional.skewed_mean(x @ x.T, lam=2.0))

    flow = pr.FlowEmbedder(6, 4, num_blocks=2, hidden_features=8)
    contrastive = losses.ContrastiveLoss(embedding_regularizer=pr.JacobianDeterminantRegularizer(flow))
    _finite("FlowEmbedder + JacobianDeterminantRegularizer", contrastive(flow(x), labels))

    dueling = pr.DuelingFlowEmbedder(6, 4, num_blocks=2, hidden_features=8)
    determinant = pr.JacobianDeterminantLoss(
        losses.ContrastiveLoss(), dueling, reward_weight=0.5, interpolation_eps=0.5
    )
    _finite("DuelingFlowEmbedder + JacobianDeterminantLoss", determinant(dueling(x), labels))

    embedder = pr.DVMLEmbedder(6, 4)
    out = embedder(x, num_samples=2)
    if not isinstance(out, pr.DVMLOutput):
        raise TypeError(f"DVMLEmbedder returned {type(out).__name__}, not DVMLOutput")
    tuples = pr.DVMLMiner(miners.TripletMarginMiner())(out.invariant, labels, out.samples, labels.repeat_interleave(2))
    if len(tuples) != 3 or len(tuples[0]) == 0:
        raise ValueError(f"DVMLMiner returned {len(tuples[0])} triplets")
    dvml = pr.DVMLLoss(embedder, losses.TripletMarginLoss(), num_samples=2)
    _finite("DVMLLoss", dvml(x, labels, epoch=1))

    trunk = torch.nn.Linear(6, 6)
    trainer = pr.DVMLTrainer(
        models={"trunk": trunk, "embedder": embedder},
        optimizers={
            "trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.01),
            "embedder_optimizer": torch.optim.SGD(embedder.parameters(), lr=0.01),
        },
        batch_size=6,
        loss_funcs={"metric_loss": losses.TripletMarginLoss()},
        dataset=torch.utils.data.TensorDataset(x, labels),
        dataloader_num_workers=0,
        num_samples=2,
    )
    trainer.train(num_epochs=1)
    _finite("DVMLTrainer", torch.tensor(trainer.losses["total_loss"]))


def _finite(what: str, value: torch.Tensor) -> None:
    import torch

    if not torch.isfinite(value).all():
        raise ValueError(f"{what} gave {value}")


def main(argv: list[str]) -> int:
    if "--refuse-extras" in argv:
        sys.meta_path.insert(0, RefuseExtras())
    if "--cli" in argv:
        sys.argv = ["pml-bench", "run"]
        try:
            runpy.run_module("pml_regularizers.bench", run_name="__main__", alter_sys=True)
        except SystemExit as done:
            return done.code if isinstance(done.code, int) else 1
        return 0
    names = core_module_names()
    for name in names:
        importlib.import_module(name)
    run_public_classes()
    print("core ok:", ",".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
