"""Trainers on PML's ``BaseTrainer``."""

from .dvml_trainer import DVMLTrainer

__all__: list[str] = ["DVMLTrainer"]
