"""Loss modules for plain training loops."""

__all__: list[str] = []
