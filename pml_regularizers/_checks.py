"""Argument checks shared by the package's modules."""

from __future__ import annotations


def is_positive_int(v: object) -> bool:
    """True for an ``int`` (not a ``bool``) greater than 0."""
    return isinstance(v, int) and not isinstance(v, bool) and v > 0
