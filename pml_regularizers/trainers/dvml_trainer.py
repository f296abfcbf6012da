"""DVMLTrainer: Deep Variational Metric Learning on PML's trainer machinery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytorch_metric_learning.trainers import MetricLossOnly
from torch import Tensor

from ..losses.dvml_loss import PAPER_PHASE1_WEIGHTS, PAPER_PHASE2_WEIGHTS, TERM_NAMES, DVMLLoss


class DVMLTrainer(MetricLossOnly):
    """Trains a trunk and a :class:`~pml_regularizers.DVMLEmbedder` with DVML's four losses.

    Built exactly like PML's ``MetricLossOnly`` (``models={"trunk", "embedder"}``,
    ``optimizers``, ``batch_size``, ``loss_funcs={"metric_loss": any PML loss}``,
    ``mining_funcs``, ``dataset``, ``sampler``, hooks, ...) plus the keyword-only DVML arguments
    below. Each iteration runs the trunk once and computes, through
    :class:`~pml_regularizers.DVMLLoss` on the trunk features, the four terms

    .. math::

        L = \\lambda_1 \\mathrm{KL} + \\lambda_2 L_{rec} + \\lambda_3 L_m(\\hat z)
            + \\lambda_4 L_m(z_I),

    each stored under its own key of ``trainer.losses`` (``kl_loss``, ``reconstruction_loss``,
    ``synthetic_metric_loss``, ``metric_loss``), so record-keeper's hooks log each one. The
    phase weights :math:`\\lambda` enter through ``loss_weights``: in every iteration
    ``update_loss_weights`` sets each term's weight to the user's ``loss_weights`` entry (1 by
    default) times the weight of the current phase. The phase follows ``trainer.epoch``, i.e.
    the epoch numbers given to ``train(start_epoch, num_epochs)``, not the number of calls.

    Source: Lin et al., "Deep Variational Metric Learning", ECCV 2018; see
    :class:`~pml_regularizers.DVMLLoss` for what is published and what is reconstructed.

    Parameters
    ----------
    *args, **kwargs
        PML ``BaseTrainer`` arguments. ``models["embedder"]`` must be a ``DVMLEmbedder`` and
        ``loss_funcs`` must hold ``"metric_loss"``. ``mining_funcs`` may hold
        ``"tuple_miner"`` (any PML miner, used for :math:`L_m(z_I)`; a copy of it is wrapped in
        a :class:`~pml_regularizers.DVMLMiner` for :math:`L_m(\\hat z)`, and a ``DVMLMiner``
        given here is used for :math:`L_m(\\hat z)` with a copy of its inner miner for
        :math:`L_m(z_I)`), ``"synthetic_tuple_miner"`` (an explicit ``DVMLMiner``) and PML's
        ``"subset_batch_miner"``. After construction ``mining_funcs`` holds the miners in use
        under ``"tuple_miner"`` and ``"synthetic_tuple_miner"``, so their stats are logged.
    num_samples, phase2_start_epoch, phase1_weights, phase2_weights, dimension_mean, synthetic_reference
        Keyword-only: :class:`~pml_regularizers.DVMLLoss`'s settings, with its defaults and their
        reasons (:math:`T = 20`, phase 2 from epoch 5, the paper's phase weights, means over
        dimensions, the synthetic loss's call form chosen from the metric loss).

    Notes
    -----
    The embedder's ``forward(x)`` returns :math:`z_I`, so PML testers, ``subset_batch_miner``
    and ``compute_embeddings`` see an ordinary embedder. ``dvml_loss`` is the
    :class:`~pml_regularizers.DVMLLoss` the trainer computes its losses with, over the same
    embedder, loss and miners.
    """

    loss_weights: dict[str, float]

    def __init__(
        self,
        *args: Any,
        num_samples: int = 20,
        phase2_start_epoch: int = 5,
        phase1_weights: Sequence[float] = PAPER_PHASE1_WEIGHTS,
        phase2_weights: Sequence[float] = PAPER_PHASE2_WEIGHTS,
        dimension_mean: bool = True,
        synthetic_reference: bool | None = None,
        **kwargs: Any,
    ) -> None:
        self._dvml_args: dict[str, Any] = {
            "num_samples": num_samples,
            "phase2_start_epoch": phase2_start_epoch,
            "phase1_weights": phase1_weights,
            "phase2_weights": phase2_weights,
            "dimension_mean": dimension_mean,
            "synthetic_reference": synthetic_reference,
        }
        super().__init__(*args, **kwargs)
        # update_loss_weights rewrites the weights at every iteration: on a copy, so that the
        # caller's dict (shared by the trainers of several folds or seeds) keeps the base weights.
        self.loss_weights = dict(self.loss_weights)
        self.base_loss_weights = {k: self.loss_weights[k] for k in TERM_NAMES}

    def custom_setup(self) -> None:
        self._check_models_and_losses()
        miners = self.mining_funcs
        self.dvml_loss = DVMLLoss(
            self.models["embedder"],
            self.loss_funcs["metric_loss"],
            miner=miners.get("tuple_miner"),
            synthetic_miner=miners.get("synthetic_tuple_miner"),
            **self._dvml_args,
        )
        miners.pop("tuple_miner", None)
        if self.dvml_loss.miner is not None:
            miners["tuple_miner"] = self.dvml_loss.miner
        miners["synthetic_tuple_miner"] = self.dvml_loss.synthetic_miner
        self.loss_names += [k for k in TERM_NAMES if k not in self.loss_names]

    def modify_schema(self) -> None:
        super().modify_schema()
        self.schema["models"].essential += ["embedder"]
        self.schema["mining_funcs"].keys += ["synthetic_tuple_miner"]

    def update_loss_weights(self) -> None:
        phase_weights = self.dvml_loss.weights(self.epoch)
        for k in TERM_NAMES:
            self.loss_weights[k] = self.base_loss_weights[k] * phase_weights[k]

    def calculate_loss(self, curr_batch: tuple[Tensor, Tensor]) -> None:
        """Fill ``self.losses`` with the four DVML terms of the batch ``(data, labels)``."""
        data, labels = curr_batch
        features = self.get_trunk_output(data)
        self.losses.update(self.dvml_loss.terms(features, labels, self.epoch))

    @property
    def phase(self) -> int:
        """The DVML phase (1 or 2) of the current ``epoch``."""
        return self.dvml_loss.phase(self.epoch)

    def _check_models_and_losses(self) -> None:
        if not isinstance(self.models, dict) or not {"trunk", "embedder"} <= set(self.models):
            found: object = sorted(self.models) if isinstance(self.models, dict) else type(self.models)
            raise ValueError(f"models must be a dict with 'trunk' and 'embedder' (a DVMLEmbedder), got {found}")
        if not isinstance(self.loss_funcs, dict) or "metric_loss" not in self.loss_funcs:
            found = sorted(self.loss_funcs) if isinstance(self.loss_funcs, dict) else None
            raise ValueError(f"loss_funcs must be a dict with 'metric_loss' (a PML metric loss), got {found}")
        unknown = set(self.mining_funcs) - {"tuple_miner", "synthetic_tuple_miner", "subset_batch_miner"}
        if unknown:
            raise ValueError(
                f"mining_funcs keys must be among 'tuple_miner', 'synthetic_tuple_miner', "
                f"'subset_batch_miner', got {sorted(unknown)}"
            )
