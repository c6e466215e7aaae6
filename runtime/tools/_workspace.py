"""A directory that file and shell tools are confined to.

Confinement is checked twice, so that neither a crafted path nor a race gets out:

1. Lexically and by real path: a path is relative, has no ``..`` component, and its real path
   (symlinks resolved) lies inside the root. Symlinks that stay inside the root are fine.
2. At open time: the real path is walked from a descriptor of the root, one component at a
   time, with ``O_NOFOLLOW``. A component swapped for a symlink between the check and the
   open (``ELOOP``) or for a file (``ENOTDIR``) is refused, so nothing is ever opened
   outside the root, whatever happens to the tree meanwhile.

Errors never show the root's absolute path, only the path as the caller gave it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Final

from .._errors import InvalidArgument
from ._errors import InvalidToolArguments, ToolFailed, ToolPermissionDenied

__all__ = ["Workspace"]

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW: Final = os.O_NOFOLLOW


class Workspace:
    """The root directory that confines the native file and shell tools.

    Args:
        root: an existing directory; it is resolved to its real path once, here.

    Raises:
        InvalidArgument: ``root`` is not an existing directory.
    """

    __slots__ = ("_root",)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise InvalidArgument(f"workspace root {os.fspath(root)!r} is not a directory")
        self._root = real

    @property
    def root(self) -> Path:
        """The real path of the root."""
        return Path(self._root)

    def __repr__(self) -> str:
        return f"Workspace({self._root!r})"

    def components(self, path: str) -> list[str]:
        """The components of ``path``'s real path below the root (``[]`` for the root itself).

        Raises:
            InvalidToolArguments: ``path`` holds a NUL character.
            ToolPermissionDenied: ``path`` is absolute, has a ``..`` component, or resolves
                (through symlinks) outside the root.
        """
        if "\0" in path:
            raise InvalidToolArguments("a path cannot contain NUL characters", path=("path",))
        if path.startswith(("/", "~")):
            raise ToolPermissionDenied(f"{path!r}: paths are relative to the workspace root")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ToolPermissionDenied(f"{path!r}: '..' is not allowed in paths")
        real = os.path.realpath(os.path.join(self._root, *parts))
        if real == self._root:
            return []
        if not real.startswith(self._root + os.sep):
            raise ToolPermissionDenied(f"{path!r} leaves the workspace through a symbolic link")
        return real[len(self._root) + 1 :].split(os.sep)

    @contextmanager
    def directory(
        self, parts: list[str], path: str, *, create: bool = False, target: bool = False
    ) -> Iterator[int]:
        """Open the directory ``parts`` (from :meth:`components`) without following symlinks.

        Args:
            parts: the directory's components below the root.
            path: the path as the caller gave it, for error messages.
            create: create missing directories (mode 0o755) on the way.
            target: the directory is what the caller asked for (a listing), so its being a
                file is a plain failure rather than a path running through a file.

        Yields:
            A descriptor of the directory, closed on exit.

        Raises:
            ToolPermissionDenied: a component is (now) a symlink or, on the way, a file.
            ToolFailed: a component does not exist, the target is not a directory, or
                another OS error.
        """
        with ExitStack() as stack:
            fd = os.open(self._root, _DIR_FLAGS)
            stack.callback(os.close, fd)
            for index, part in enumerate(parts, 1):
                try:
                    if create:
                        with suppress(FileExistsError):
                            os.mkdir(part, 0o755, dir_fd=fd)
                    fd = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
                except NotADirectoryError:
                    if target and index == len(parts):
                        raise ToolFailed(
                            "NotADirectoryError", f"{path!r} is not a directory"
                        ) from None
                    raise ToolPermissionDenied(
                        f"{path!r}: a component of the path is a file or a symbolic link"
                    ) from None
                except OSError as exc:
                    raise os_error(exc, path) from None
                stack.callback(os.close, fd)
            yield fd

    def real_path(self, parts: list[str]) -> str:
        """The absolute real path of ``parts`` (for handing a directory to a child process)."""
        return os.path.join(self._root, *parts)


def os_error(exc: OSError, path: str) -> ToolFailed | ToolPermissionDenied:
    """The tool error for ``exc`` met while opening ``path`` (as the caller gave it)."""
    match exc.errno:
        case errno.ELOOP:
            return ToolPermissionDenied(f"{path!r}: symbolic links are not followed here")
        case errno.ENOTDIR:
            return ToolPermissionDenied(
                f"{path!r}: a component of the path is a file or a symbolic link"
            )
        case errno.EACCES | errno.EPERM:
            return ToolPermissionDenied(f"{path!r}: permission denied by the operating system")
        case errno.ENOENT:
            return ToolFailed("FileNotFoundError", f"{path!r} does not exist")
        case errno.EEXIST:
            return ToolFailed("FileExistsError", f"{path!r} already exists")
        case errno.EISDIR:
            return ToolFailed("IsADirectoryError", f"{path!r} is a directory")
        case _:
            return ToolFailed(type(exc).__name__, f"{path!r}: {exc.strerror}")
