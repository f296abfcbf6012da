"""Embedders (PML's ``embedder`` model): metric layers placed after the trunk."""

__all__: list[str] = []
