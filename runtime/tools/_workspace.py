"""A directory that file and shell tools are confined to.

Confinement is checked twice, so that neither a crafted path nor a race gets out:

1. Lexically and by real path: a path is relative, has no ``..`` component, and its real path
   (symlinks resolved) lies inside the root. Symlinks that stay inside the root are fine.
2. At open time: the real path is walked from a descriptor of the root, one component at a
   time, with ``O_NOFOLLOW``. A component swapped for a symlink between the check and the
   open (``ELOOP``) or for a file (``ENOTDIR``) is refused, so nothing is ever opened
   outside the root, whatever happens to the tree meanwhile.

Paths that a child process opens itself (``shell.exec``'s file arguments) get the same real
path check from :meth:`Workspace.check` before the program starts, plus two more: a regular
file with more than one hard link is refused (its other names may lie outside, and no
lookup can tell where), and a directory the program will read recursively is walked first
for the same reasons. The program then opens by name, so unlike the ``fs.*`` tools these
checks race with anything else that can write the workspace (``docs/tools.md`` says how).

Errors never show the root's absolute path, only the path as the caller gave it.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Final

from .._errors import InvalidArgument
from ._errors import InvalidToolArguments, ToolFailed, ToolPermissionDenied

__all__ = ["MAX_TREE_ENTRIES", "PathAccess", "Workspace"]

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW: Final = os.O_NOFOLLOW

MAX_TREE_ENTRIES: Final = 50_000
"""The most entries :meth:`Workspace.check` walks below a directory read recursively."""


class PathAccess(enum.Enum):
    """How a child process will use a path it is given (see :meth:`Workspace.check`)."""

    STAT = "stat"
    """Only its metadata or a directory's names (``ls``, ``find``): the real path is checked."""
    READ = "read"
    """Its content: a hard-linked file is refused as well."""
    WRITE = "write"
    """Written or created: like ``READ``."""
    READ_TREE = "read tree"
    """Its content and, for a directory, every file below it, symlinks not followed there
    (``grep -r``)."""
    READ_TREE_FOLLOW = "read tree following links"
    """Like ``READ_TREE``, but the program follows symlinks below (``diff`` on directories):
    a symlink there must stay inside and lead to a file, not a directory."""


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

    def components(self, path: str, base: list[str] | None = None) -> list[str]:
        """The components of ``path``'s real path below the root (``[]`` for the root itself).

        Args:
            path: a path relative to ``base``.
            base: the real components of the directory ``path`` is relative to (a child's
                working directory); the root when ``None``.

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
        real = os.path.realpath(os.path.join(self._root, *(base or ()), *parts))
        if real == self._root:
            return []
        if not real.startswith(self._root + os.sep):
            raise ToolPermissionDenied(f"{path!r} leaves the workspace through a symbolic link")
        return real[len(self._root) + 1 :].split(os.sep)

    @contextmanager
    def directory(
        self,
        parts: list[str],
        path: str,
        *,
        create: bool = False,
        target: bool = False,
        at: int | None = None,
    ) -> Iterator[int]:
        """Open the directory ``parts`` (from :meth:`components`) without following symlinks.

        Args:
            parts: the directory's components below the root.
            path: the path as the caller gave it, for error messages.
            create: create missing directories (mode 0o755) on the way.
            target: the directory is what the caller asked for (a listing), so its being a
                file is a plain failure rather than a path running through a file.
            at: a descriptor of the directory ``parts`` start from, instead of the root.

        Yields:
            A descriptor of the directory, closed on exit.

        Raises:
            ToolPermissionDenied: a component is (now) a symlink or, on the way, a file.
            ToolFailed: a component does not exist, the target is not a directory, or
                another OS error.
        """
        with ExitStack() as stack:
            fd = (
                os.open(".", _DIR_FLAGS, dir_fd=at)
                if at is not None
                else os.open(self._root, _DIR_FLAGS)
            )
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

    def check(self, path: str, access: PathAccess, base: list[str] | None = None) -> None:
        """Refuse ``path`` unless a child process may use it as ``access`` says.

        The real path must lie inside the root (:meth:`components`); an existing regular file
        must have a single hard link, unless only its metadata is used; a directory read
        recursively is walked, at most :data:`MAX_TREE_ENTRIES` entries, and refused when
        anything below fails the same rules. A missing path passes: the program reports it
        (or, writing, creates a regular file with one link). This is a check made before the
        program opens the path, not a lock: see the module docstring.

        Raises:
            ToolPermissionDenied: the path, or something below it, is refused.
            ToolFailed: an OS error other than a missing path.
        """
        parts = self.components(path, base)
        tree = access in (PathAccess.READ_TREE, PathAccess.READ_TREE_FOLLOW)
        if not parts:
            if tree:
                with self.directory([], path, target=True) as fd:
                    self._walk(fd, [], path, access, [MAX_TREE_ENTRIES])
            return
        try:
            with self.directory(parts[:-1], path) as fd:
                try:
                    info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    return
                except OSError as exc:
                    raise os_error(exc, path) from None
                if access is PathAccess.STAT:
                    return
                if stat.S_ISREG(info.st_mode):
                    single_link(info, path)
                elif stat.S_ISDIR(info.st_mode) and tree:
                    with self.directory(parts[-1:], path, target=True, at=fd) as below:
                        self._walk(below, parts, path, access, [MAX_TREE_ENTRIES])
        except ToolFailed as exc:
            # A missing directory on the way: the program will say so itself.
            if exc.cause_type != "FileNotFoundError":
                raise

    def _walk(
        self, fd: int, parts: list[str], shown: str, access: PathAccess, budget: list[int]
    ) -> None:
        with os.scandir(fd) as entries:
            for entry in entries:
                budget[0] -= 1
                if budget[0] < 0:
                    raise ToolPermissionDenied(
                        f"the tree below {shown!r} holds more than {MAX_TREE_ENTRIES} entries, "
                        "too many to check before a program reads it recursively"
                    )
                name = f"{shown.rstrip('/')}/{entry.name}"
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    if access is PathAccess.READ_TREE_FOLLOW:
                        self._check_link([*parts, entry.name], name)
                elif stat.S_ISREG(info.st_mode):
                    single_link(info, name)
                elif stat.S_ISDIR(info.st_mode):
                    with self.directory([entry.name], name, target=True, at=fd) as below:
                        self._walk(below, [*parts, entry.name], name, access, budget)

    def _check_link(self, parts: list[str], shown: str) -> None:
        # The program will follow it: its target must be inside and a plain file (a link to
        # a directory would take the program into a tree not walked here, or round a loop).
        real = os.path.realpath(os.path.join(self._root, *parts))
        if not real.startswith(self._root + os.sep):
            raise ToolPermissionDenied(f"{shown!r} leaves the workspace through a symbolic link")
        try:
            info = os.stat(real)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise os_error(exc, shown) from None
        if stat.S_ISDIR(info.st_mode):
            raise ToolPermissionDenied(
                f"{shown!r} is a symbolic link to a directory, which the program would follow"
            )
        if stat.S_ISREG(info.st_mode):
            single_link(info, shown)


def single_link(info: os.stat_result, path: str) -> None:
    """Refuse a regular file with more than one hard link: its other names may be anywhere
    on the file system (finding them would need a search of all of it)."""
    if info.st_nlink > 1:
        raise ToolPermissionDenied(
            f"{path!r} has {info.st_nlink} hard links; a file with more than one is refused, "
            "since its other names may lie outside the workspace"
        )


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
