"""Public names show the public module they are imported from, not the private one defining them.

``ToolNotFound`` reads ``loom.runtime.tools.ToolNotFound`` in reprs, tracebacks, docs and
pickles, rather than ``loom.runtime.tools._errors.ToolNotFound``: the private module
is free to move, the public path is the promise. anyio does the same at the end of its
``__init__``. Every public module calls :func:`set_public_module` once its names are bound.

The most specific public package wins: a package's ``__init__`` finishes before its parent's
(the parent imports from it), so ``loom.runtime.collab`` claims ``BarrierAborted`` before
``loom.runtime`` re-exports it, and ``loom`` finds ``loom.runtime``'s names already public.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["public_module", "set_public_module"]


def set_public_module(namespace: Mapping[str, Any]) -> None:
    """Make each class and function named in ``namespace["__all__"]`` and defined in a private
    loom module show ``namespace["__name__"]`` as its ``__module__``.

    Names a package loads lazily (not yet in ``namespace``) are skipped: its ``__getattr__``
    calls :func:`public_module` on them as they load.
    """
    name = namespace["__name__"]
    for attr in namespace["__all__"]:
        if attr in namespace:
            public_module(namespace[attr], name)


def public_module(value: Any, module: str) -> None:
    """Set ``value.__module__`` to ``module`` if ``value`` is a class or function of loom's
    that still shows a private module (one with a ``_name`` component)."""
    if not (isinstance(value, type) or inspect.isfunction(value)):
        return  # constants and aliases: no __module__ of their own to set
    defined_in = getattr(value, "__module__", "")
    if not (defined_in.startswith("loom.") and _is_private(defined_in)):
        return
    if isinstance(value, type):
        _resolve_annotations(value)
    value.__module__ = module


def _is_private(module: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in module.split("."))


def _resolve_annotations(cls: type) -> None:
    # msgspec (and typing.get_type_hints) resolve a class's string annotations (``from
    # __future__ import annotations``) in the module its __module__ names. Once that is the
    # public package, names only the defining module imports would not resolve, so the
    # annotations are resolved now, in the defining module, and stored resolved.
    own = inspect.get_annotations(cls)
    if not own or not any(isinstance(v, str) for v in own.values()):
        return
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except (NameError, TypeError, KeyError):
        return  # a name only a type checker sees: msgspec could not resolve it there either
    cls.__annotations__ = {key: hints.get(key, value) for key, value in own.items()}
