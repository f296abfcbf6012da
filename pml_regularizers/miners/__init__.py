"""Miners (PML ``BaseMiner`` subclasses)."""

from .dvml_miner import DVMLMiner

__all__: list[str] = ["DVMLMiner"]
