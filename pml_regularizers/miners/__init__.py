"""Miners (PML ``BaseMiner`` subclasses)."""

__all__: list[str] = []
