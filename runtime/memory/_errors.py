"""Errors of the context layer, all under :class:`loom.runtime.LoomError`."""

from __future__ import annotations

from .._errors import InvalidArgument, LoomError

__all__ = [
    "BudgetTooSmall",
    "ContextError",
    "DuplicateItem",
    "InvalidItem",
    "SchemaVersionError",
    "StoreClosed",
    "StoreOpenError",
]


class ContextError(LoomError):
    """Base of the errors raised by ``loom.runtime.memory``."""


class InvalidItem(ContextError, InvalidArgument):
    """A context item is malformed (a tool result without a call id, importance out of 0..1, ...).

    Attributes:
        reason: what is wrong, in words.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid context item: {reason}")
        self.reason = reason


class DuplicateItem(ContextError, InvalidArgument):
    """An item with this id is already stored; nothing was written.

    Attributes:
        item_id: the id that is already taken.
    """

    def __init__(self, item_id: str) -> None:
        super().__init__(f"an item with id {item_id!r} is already stored")
        self.item_id = item_id


class StoreClosed(ContextError):
    """The memory store is not open (never opened, or closed) and refuses the operation."""


class StoreOpenError(ContextError, OSError):
    """The store's file cannot be opened: a directory is in the way, it is not a SQLite
    database, or it is not readable/writable.

    Attributes:
        path: the database file.
        reason: what SQLite or the OS said.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot open the context store {path}: {reason}")
        self.path = path
        self.reason = reason


class SchemaVersionError(ContextError):
    """The SQLite file was written by a newer Loom whose schema this one does not know.

    Attributes:
        path: the database file.
        found: the schema version in the file.
        supported: the newest version this code understands.
    """

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            f"{path}: context schema version {found} is newer than the supported {supported}"
        )
        self.path = path
        self.found = found
        self.supported = supported


class BudgetTooSmall(ContextError, ValueError):
    """The token budget cannot hold what a prompt must contain.

    A prompt always holds the system text and the newest turn of the conversation (the newest
    message, or the newest tool call together with its results); when those alone exceed the
    budget no useful prompt exists, so nothing is silently cut.

    Attributes:
        budget_tokens: the budget asked for.
        required_tokens: what the mandatory part needs.
    """

    def __init__(self, budget_tokens: int, required_tokens: int) -> None:
        super().__init__(
            f"a token budget of {budget_tokens} cannot hold the system text and the newest turn "
            f"({required_tokens} tokens)"
        )
        self.budget_tokens = budget_tokens
        self.required_tokens = required_tokens
