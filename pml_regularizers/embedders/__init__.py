"""Embedders (PML's ``embedder`` model): metric layers placed after the trunk."""

from .dvml_embedder import DVMLEmbedder, DVMLOutput
from .dueling_flow_embedder import DuelingFlowEmbedder
from .flow_embedder import FlowEmbedder

__all__: list[str] = ["DVMLEmbedder", "DVMLOutput", "FlowEmbedder", "DuelingFlowEmbedder"]
