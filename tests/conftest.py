"""Shared test settings, following PML's own tests: every check loops over these dtypes, with
rtol 1e-2 for float16 and PML's 1e-5 otherwise (float64 checks that are exact math use tighter)."""

import pytest
import torch

from .e2e import pml_logging as make_pml_logging

TEST_DTYPES = [torch.float16, torch.float32, torch.float64]


def rtol_for(dtype: torch.dtype) -> float:
    return 1e-2 if dtype == torch.float16 else 1e-5


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def pml_logging(tmp_path):
    """PML's logging presets, a tester and its end-of-epoch hook, logging under ``tmp_path``: a
    function of the validation set, the patience and the hook container's options
    (:func:`tests.e2e.pml_logging`)."""

    def make(val, patience=1, **hook_options):
        return make_pml_logging(tmp_path, val, patience, **hook_options)

    return make
