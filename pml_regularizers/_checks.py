"""Tensor checks shared by the package's modules: shapes and dtypes (:func:`check_rows`) and the
finite-value policy with its switch (:func:`check_finite`, :class:`set_finite_checks`)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import ParamSpec, TypeVar

import torch
from torch import Tensor


def check_rows(x: object, name: str, width: int, width_name: str) -> None:
    """Raise a ``ValueError`` unless ``x`` is a floating-point tensor of shape ``(N, width)``
    (finiteness is :func:`check_finite`'s)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"{name} must be 2-D with shape (N, {width_name}={width}), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating-point dtype, got {x.dtype}")


_FINITE_CHECKS = {"enabled": True}
_P = ParamSpec("_P")
_R = TypeVar("_R")


class set_finite_checks:
    """Turn the package's finite checks (:func:`check_finite`) on or off: from here on, in a block,
    or for the calls of a function.

    Each check costs one wait for the device per call of a public module (the flow's forward,
    each regularizer and loss call). Turned off, non-finite input and overflow pass through
    silently, as in PyTorch; shapes, dtypes and settings are still checked, which costs no
    wait. On by default: a wrong finite value or a NaN that surfaces epochs later costs more
    than the wait; the cost per step is measured by ``benchmarks/finite_checks.py``.

    Used as :class:`torch.set_grad_enabled` is: a call sets the checks from here on; a ``with``
    block, and a function decorated with it, restore the previous setting when they end (also
    when they raise). Decorating changes nothing until the decorated function is called.

    Parameters
    ----------
    enabled : bool
        Whether the checks run.

    Raises
    ------
    ValueError
        When ``enabled`` is not a bool (the setting is left as it was).
    TypeError
        When what it decorates is not a plain function (a generator or coroutine function, whose
        body runs after the call has returned, or anything not callable); the setting is left as
        it was.

    Examples
    --------
    >>> import pml_regularizers
    >>> with pml_regularizers.set_finite_checks(False):
    ...     pml_regularizers.finite_checks_enabled()
    False
    >>> @pml_regularizers.set_finite_checks(False)
    ... def trusted_step():
    ...     return pml_regularizers.finite_checks_enabled()
    >>> trusted_step(), pml_regularizers.finite_checks_enabled()
    (False, True)
    """

    def __init__(self, enabled: bool) -> None:
        if not isinstance(enabled, bool):
            raise ValueError(f"enabled must be True or False, got {enabled!r}")
        self.enabled = enabled
        self.previous = _FINITE_CHECKS["enabled"]
        _FINITE_CHECKS["enabled"] = enabled

    def __enter__(self) -> set_finite_checks:
        return self

    def __exit__(self, *exc_info: object) -> None:
        _FINITE_CHECKS["enabled"] = self.previous

    def __call__(self, function: Callable[_P, _R]) -> Callable[_P, _R]:
        """Decorate ``function`` so that it runs with the checks set to ``enabled``; the setting
        made when this object was created is undone first, as a decorator must not change it."""
        _FINITE_CHECKS["enabled"] = self.previous
        deferred = inspect.isgeneratorfunction(function) or inspect.iscoroutinefunction(function)
        if not callable(function) or deferred or inspect.isasyncgenfunction(function):
            kind = "a generator or coroutine function" if callable(function) else type(function).__name__
            raise TypeError(
                f"set_finite_checks decorates plain functions, got {kind}: use a with block inside it instead"
            )
        enabled = self.enabled

        @functools.wraps(function)
        def with_setting(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with set_finite_checks(enabled):
                return function(*args, **kwargs)

        return with_setting


def finite_checks_enabled() -> bool:
    """Whether the finite checks run (:class:`set_finite_checks`)."""
    return _FINITE_CHECKS["enabled"]


def check_finite(
    where: str,
    inputs: Mapping[str, Tensor],
    outputs: Sequence[Tensor] = (),
    params: Mapping[str, float] | None = None,
) -> None:
    """The package's policy on non-finite values, for one call of a public module.

    A NaN or infinity in one of ``inputs`` raises a ``ValueError`` naming that argument. When
    every input is finite but one of ``outputs`` is not (the computation overflowed), the
    ``ValueError`` names ``where``, the inputs and their largest magnitudes, instead of letting
    the NaN or infinity through. All tensors are tested together, so a call costs one wait for
    the device whatever the number of tensors, and one sum a tensor; the messages are only built
    on failure.

    Parameters
    ----------
    where : str
        The module (and method) that computed ``outputs``, for the message.
    inputs : mapping of str to Tensor
        The floating-point arguments the caller was given, by argument name.
    outputs : sequence of Tensor
        What the caller computed from them.
    params : mapping of str to float, optional
        The caller's numeric settings that scale the result (such as a target or a skew), quoted
        in the overflow message, since one of them may be the cause.

    Nothing is checked while :class:`set_finite_checks` has turned the checks off.
    """
    tensors = [*inputs.values(), *outputs]
    if not tensors or not _FINITE_CHECKS["enabled"]:
        return
    device = tensors[0].device
    # One reduction a tensor: a NaN or infinity makes its float64 sum non-finite, and finite
    # values of 16- or 32-bit dtypes cannot overflow it. A float64 sum of huge finite float64
    # values can, so a non-finite total is confirmed element-wise before anything is raised.
    total = torch.stack([t.detach().sum(dtype=torch.float64).to(device) for t in tensors]).sum()
    if bool(torch.isfinite(total)):
        return
    if all(bool(torch.isfinite(t).all()) for t in tensors):
        return
    for name, t in inputs.items():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains non-finite values (nan or inf)")
    sizes = ", ".join(
        f"largest |{name}| = {float(t.detach().abs().max()) if t.numel() else 0.0:.3g}" for name, t in inputs.items()
    )
    if params:
        sizes += "; " + ", ".join(f"{name} = {value:.3g}" for name, value in params.items())
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in outputs})
    raise ValueError(
        f"{where}: {' and '.join(inputs)} {'is' if len(inputs) == 1 else 'are'} finite but the "
        f"result is not ({sizes}): the computation overflowed or was undefined in "
        f"{'/'.join(dtypes)}; scale the input down{', use smaller settings' if params else ''} "
        "or compute in a wider dtype"
    )
