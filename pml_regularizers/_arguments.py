"""Checks of plain Python arguments (ints, finite floats, number sequences) shared by the package's
modules; they import nothing heavy, so the benchmark runner's config checks can use them before torch
is imported."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["check_num_samples", "finite_float", "finite_floats", "is_int", "is_positive_int"]


def is_int(v: object, minimum: int | None = None) -> bool:
    """True for an ``int`` that is not a ``bool`` (``True`` is an ``int`` to Python), and at least
    ``minimum`` when one is given."""
    return isinstance(v, int) and not isinstance(v, bool) and (minimum is None or v >= minimum)


def is_positive_int(v: object) -> bool:
    """True for an ``int`` (not a ``bool``) greater than 0."""
    return is_int(v, 1)


def check_num_samples(num_samples: object) -> int:
    """Return ``num_samples`` if it is an int >= 1, else raise ValueError."""
    if not is_positive_int(num_samples):
        raise ValueError(f"num_samples (T) must be an int >= 1, got {num_samples!r}")
    return num_samples  # type: ignore[return-value]


def finite_float(name: str, value: object) -> float:
    """``value`` as a float, or a ValueError naming ``name`` if it is not a finite real number (a
    string is not one, even one that reads as a number)."""
    out = math.nan
    if not isinstance(value, (str, bytes)):
        try:
            out = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return out


def finite_floats(name: str, values: object, length: int, meaning: str) -> list[float]:
    """``values`` as a list of ``length`` floats, or a ValueError naming ``name``.

    Parameters
    ----------
    name : str
        The argument, for the message.
    values : object
        A sequence (a list, a tuple, a tensor's ``tolist()``; not a string, which Python would
        read character by character) of ``length`` finite real numbers.
    length : int
        How many numbers it must hold.
    meaning : str
        What the numbers are, in order, for the message (for example ``"R, G, B"``).

    Returns
    -------
    list of float
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != length:
        got = f"a string {values!r}" if isinstance(values, (str, bytes)) else repr(values)
        raise ValueError(f"{name} must be a sequence of {length} numbers ({meaning}), got {got}")
    return [finite_float(f"{name}[{i}]", value) for i, value in enumerate(values)]
