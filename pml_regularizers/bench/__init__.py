"""Benchmark runner: PML's benchmarking protocol on PML 2.x.

This package's public API, for scripts, notebooks and the project's own experiments and benchmarks
(``pml-bench`` is its command line), with its two public sub-packages: ``pml_regularizers.bench.data``
(the data sets and their containers) and ``pml_regularizers.bench.models`` (the trunks). The names
are imported on first use, so importing the package (as ``pml-bench`` does before it checks what
is installed) needs none of the bench extra's dependencies.

The sub-packages hold one concern each: ``spec`` (the config, composed and checked),
``data`` (data sets, loaders, the data check), ``models`` (trunks, building a run's parts, mixed
precision), ``protocol`` (the runner, fold training, checkpoints, embedding with trained models)
and ``results`` (the experiment folder, reports and their statistics); reading results never
builds a model.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    # the config
    "load_config": ".spec.compose",
    "load_spec": ".spec.compose",
    "RunSpec": ".spec.run_spec",
    "UserError": ".errors",
    "ConfigError": ".errors",
    # running
    "run_experiment": ".protocol.runner",
    "embed_data_set": ".protocol.embedding",
    "trained_models": ".protocol.trained",
    "experiment_data": ".protocol.trained",
    "experiment_split": ".protocol.trained",
    "BenchAccuracyCalculator": ".protocol.metrics",
    "BenchTrainerMixin": ".protocol.trainer",
    # data
    "check_data": ".data.check",
    "load_experiment_data": ".data.serve",
    "torch_dataset": ".data.serve",
    "training_loader": ".data.loader",
    "auto_num_workers": ".data.loader",
    # results
    "ExperimentFolder": ".results.folder",
    "FoldFolder": ".results.folder",
    "Results": ".results.folder",
    "read_checkpoint": ".results.checkpoints",
    "write_json": ".results.io",
    "PRIMARY_METRIC": ".results.metric_names",
    "METRIC_LABELS": ".results.metric_names",
    "write_report": ".results.report",
    "REPORT_JSON": ".results.report_data",
    "ReportData": ".results.report_data",
    "read_report_data": ".results.report_data",
    "SummaryRow": ".results.stats",
    "summarize": ".results.stats",
    "verdict": ".results.stats",
    "markdown_table": ".results.markdown",
    "provenance_lines": ".results.markdown",
    "plot_training_curves": ".results.plots",
    "VAL_LOG": ".results.training_logs",
    "VAL_MAP_AT_R": ".results.training_logs",
    "mean_loss_curve": ".results.training_logs",
    "validation_curves": ".results.training_logs",
    "GEOMETRY_KEYS": ".results.center_geometry",
    "read_geometry": ".results.center_geometry",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
