"""The benchmark runner's optional dependencies: whether they are installed, and errors that say
which extra of ``pml-regularizers`` to install when one is missing.

The plugin itself (``pml_regularizers`` outside ``bench``) needs torch, PML and zuko only. The
runner needs the ``bench`` extra, and the natural-image data sets and library trunks the
``vision`` extra as well.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "BENCH_INSTALL",
    "BENCH_MODULES",
    "VISION_INSTALL",
    "bench_extra_message",
    "missing_bench_modules",
    "missing_module_hint",
]

BENCH_INSTALL = 'pip install "pml-regularizers[bench]"'
VISION_INSTALL = 'pip install "pml-regularizers[vision]"'
# The modules the runner imports (or PML or Hydra imports for it) that the plugin does not need, each
# with the distribution of the bench extra that provides it. record_keeper and tensorboard are PML's
# logging hooks (logging_presets.get_record_keeper), faiss its k-nearest-neighbour search for the
# retrieval metrics (AccuracyCalculator), the joblib launcher the plugin Hydra loads for --multirun
# (the config's hydra/launcher); the runner does not import them itself.
BENCH_MODULES: dict[str, str] = {
    "hydra": "hydra-core",
    "hydra_plugins.hydra_joblib_launcher": "hydra-joblib-launcher",
    "omegaconf": "omegaconf",
    "record_keeper": "record-keeper",
    "tensorboard": "tensorboard",
    "faiss": "faiss-cpu",
    "PIL": "pillow",
    "simplejpeg": "simplejpeg",
    "scipy": "scipy",
    "matplotlib": "matplotlib",
    "optuna": "optuna",
    "sqlalchemy": "sqlalchemy",
    "yaml": "pyyaml",
}


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder that refuses the name; a module without a spec
        return False


def missing_bench_modules() -> list[str]:
    """Return the modules of :data:`BENCH_MODULES` that cannot be found, without importing any.

    Returns
    -------
    list of str
        Their import names, in the order of :data:`BENCH_MODULES`; empty when the bench extra is
        installed.
    """
    return [name for name in BENCH_MODULES if not _importable(name)]


def bench_extra_message(missing: list[str]) -> str:
    """The one-line message for a runner started without the bench extra.

    Parameters
    ----------
    missing : list of str
        Import names, as :func:`missing_bench_modules` returns them.

    Returns
    -------
    str
        The distributions that provide them and the command that installs the extra.
    """
    listed = ", ".join(dict.fromkeys(BENCH_MODULES.get(name, name) for name in missing))
    return f"the benchmark runner needs the bench extra, which is not installed (missing: {listed}); {BENCH_INSTALL}"


@contextmanager
def missing_module_hint(message: str) -> Iterator[None]:
    """Turn an ImportError raised inside the ``with`` block into ``ImportError(message)``.

    For the imports of optional dependencies, made where they are first needed, so that a user
    without the extra learns which one to install; the original error is kept as the cause.

    Parameters
    ----------
    message : str
        What needs the module and how to install it (see :data:`VISION_INSTALL`).

    Raises
    ------
    ImportError
        With ``message``, when the block raises ImportError (ModuleNotFoundError included).
    """
    try:
        yield
    except ImportError as err:
        raise ImportError(message) from err
