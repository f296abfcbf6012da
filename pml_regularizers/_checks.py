"""Argument checks shared by the package's modules."""

from __future__ import annotations

import math


def is_positive_int(v: object) -> bool:
    """True for an ``int`` (not a ``bool``) greater than 0."""
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def check_num_samples(num_samples: object) -> int:
    """Return ``num_samples`` if it is an int >= 1, else raise ValueError."""
    if not is_positive_int(num_samples):
        raise ValueError(f"num_samples (T) must be an int >= 1, got {num_samples!r}")
    return num_samples  # type: ignore[return-value]


def finite_float(name: str, value: object) -> float:
    """``value`` as a float, or a ValueError naming ``name`` if it is not a finite real number."""
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return out
