"""Trainers on PML's ``BaseTrainer``."""

__all__: list[str] = []
