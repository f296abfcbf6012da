"""Benchmark runner: PML's benchmarking protocol on PML 2.x.

The experiment folder's classes are importable from here: :class:`ExperimentFolder`,
:class:`FoldFolder` and :class:`Results` (from :mod:`pml_regularizers.bench.results.folder`). They are
imported on first use, so that importing this package (as ``pml-bench`` does) needs none of the
bench extra's dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ExperimentFolder", "FoldFolder", "Results"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".results.folder", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
