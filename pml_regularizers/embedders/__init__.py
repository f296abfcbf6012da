"""Embedders (PML's ``embedder`` model): metric layers placed after the trunk."""

from .dueling_flow_embedder import DuelingFlowEmbedder
from .dvml_embedder import DVMLEmbedder, DVMLOutput
from .flow_embedder import FlowEmbedder

__all__: list[str] = ["DVMLEmbedder", "DVMLOutput", "FlowEmbedder", "DuelingFlowEmbedder"]
