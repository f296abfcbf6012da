"""The errors the benchmark runner reports to its user: what is wrong and what to do, never a
traceback. ``pml-bench`` prints each as one ``pml-bench: error:`` line and exits with status 2."""

from __future__ import annotations

__all__ = ["ConfigError", "UserError"]


class UserError(Exception):
    """A command that cannot run as given: a config, a path, a data set or an experiment folder
    that does not fit. The message says what is wrong and names the key, file or folder;
    ``pml-bench`` prints it as one ``pml-bench: error:`` line and exits with status 2."""


class ConfigError(UserError, ValueError):
    """A config that cannot run; the message names the key and what it accepts."""
