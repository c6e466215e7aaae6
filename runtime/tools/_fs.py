"""``fs.read``, ``fs.write`` and ``fs.list``: file access confined to a :class:`Workspace`.

Each call does its blocking work in one worker thread (open, check, read or write, close);
cancellation abandons nothing half-open because the thread runs to completion, and it is
short: reads and writes are capped.

Read policy: a file is returned as UTF-8 text when its bytes are valid UTF-8, else as base64
(``encoding`` says which), so binary files are safe to read. At most ``max_bytes`` are read
from ``offset``; ``truncated`` says more follows, and ``offset + bytes_read`` is where to go
on. A multi-byte character cut by the cap is left for the next read rather than mangled.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import os
import stat
from typing import Final, Literal

import anyio.to_thread
import msgspec

from .._errors import InvalidArgument
from ._errors import InvalidToolArguments, ToolError, ToolFailed, ToolPermissionDenied
from ._tool import JSONObject
from ._workspace import Workspace, os_error, single_link

__all__ = ["DirEntry", "DirListing", "FileContent", "FileWritten", "FsList", "FsRead", "FsWrite"]

DEFAULT_MAX_READ: Final = 1 << 20
DEFAULT_MAX_WRITE: Final = 1 << 20
DEFAULT_MAX_ENTRIES: Final = 1000

# O_NONBLOCK: opening a FIFO must not hang the thread; it changes nothing for regular files.
_OPEN: Final = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

Encoding = Literal["utf-8", "base64"]


class FileContent(msgspec.Struct, frozen=True, kw_only=True):
    """What ``fs.read`` returns.

    Attributes:
        path: the path as given.
        size: the file's size in bytes.
        offset: where reading started.
        bytes_read: how many bytes ``content`` holds.
        encoding: ``"utf-8"`` (text) or ``"base64"`` (anything else).
        content: the bytes read, as text or base64.
        truncated: the file goes on after ``offset + bytes_read``.
    """

    path: str
    size: int
    offset: int
    bytes_read: int
    encoding: Encoding
    content: str
    truncated: bool


class FileWritten(msgspec.Struct, frozen=True, kw_only=True):
    """What ``fs.write`` returns: the path as given, bytes written and the file's new size."""

    path: str
    bytes_written: int
    size: int


class DirEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a listing; ``size`` is given for regular files only."""

    name: str
    type: Literal["file", "directory", "symlink", "other"]
    size: int | None = None


class DirListing(msgspec.Struct, frozen=True, kw_only=True):
    """What ``fs.list`` returns: entries sorted by name, at most the cap."""

    path: str
    entries: list[DirEntry]
    truncated: bool


def _check_cap(value: int, name: str) -> int:
    if value < 1:
        raise InvalidArgument(f"{name} must be at least 1, not {value}")
    return value


class FsRead:
    """``fs.read``: read a file of the workspace.

    Like ``fs.write``, it reads only a regular file with a single link, checked on the open
    file: a hard link could alias a file outside the workspace.

    Args:
        workspace: the confining workspace.
        max_bytes: the most bytes one call returns.
    """

    name = "fs.read"
    description = (
        "Read a file in the workspace. Paths are relative to the workspace root. Text comes "
        "back as UTF-8, other files as base64; long files are returned in parts: call again "
        "with offset = offset + bytes_read while truncated is true."
    )

    def __init__(self, workspace: Workspace, *, max_bytes: int = DEFAULT_MAX_READ) -> None:
        self._workspace = workspace
        self._max = _check_cap(max_bytes, "max_bytes")
        self.parameters_schema: JSONObject = {
            "type": "object",
            "properties": {
                "path": {"type": "string", "minLength": 1, "description": "Relative path."},
                "offset": {"type": "integer", "minimum": 0, "default": 0},
                "max_bytes": {"type": "integer", "minimum": 1, "maximum": self._max},
            },
            "required": ["path"],
            "additionalProperties": False,
        }

    async def call(self, arguments: JSONObject) -> FileContent:
        path: str = arguments["path"]
        offset: int = arguments.get("offset", 0)
        limit: int = min(arguments.get("max_bytes", self._max), self._max)
        return await anyio.to_thread.run_sync(self._read, path, offset, limit)

    def _read(self, path: str, offset: int, limit: int) -> FileContent:
        parts = self._workspace.components(path)
        if not parts:
            raise ToolFailed("IsADirectoryError", f"{path!r} is a directory")
        with self._workspace.directory(parts[:-1], path) as dir_fd:
            try:
                fd = os.open(parts[-1], os.O_RDONLY | _OPEN, dir_fd=dir_fd)
            except OSError as exc:
                raise os_error(exc, path) from None
            try:
                info = os.fstat(fd)
                _require_regular(info, path)
                # Checked on the open file, so no link made meanwhile can slip past.
                single_link(info, path)
                data = _pread_all(fd, limit, offset)
            finally:
                os.close(fd)
        truncated = offset + len(data) < info.st_size
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            text = decoder.decode(data, final=not truncated)
        except UnicodeDecodeError:
            encoding: Encoding = "base64"
            content = base64.b64encode(data).decode("ascii")
            used = len(data)
        else:
            encoding, content = "utf-8", text
            # A character cut by the cap stays pending in the decoder: leave it for next time.
            used = len(data) - len(decoder.getstate()[0])
            truncated = truncated or used < len(data)
        return FileContent(
            path=path,
            size=info.st_size,
            offset=offset,
            bytes_read=used,
            encoding=encoding,
            content=content,
            truncated=truncated,
        )


class FsWrite:
    """``fs.write``: create, overwrite or append to a file of the workspace.

    The file is opened without following symlinks and must be a regular file with a single
    link (a hard link could alias a file outside the workspace), checked on the open file.
    Overwrites truncate in place; a failed write can leave the file partially written.

    Args:
        workspace: the confining workspace.
        max_bytes: the most bytes one call may write (after base64 decoding).
    """

    name = "fs.write"
    description = (
        "Write a file in the workspace. Paths are relative to the workspace root. mode is "
        "'overwrite' (default), 'append' or 'create' (fails if the file exists); content is "
        "UTF-8 text unless encoding is 'base64'. Set create_parents to make missing folders."
    )

    def __init__(self, workspace: Workspace, *, max_bytes: int = DEFAULT_MAX_WRITE) -> None:
        self._workspace = workspace
        self._max = _check_cap(max_bytes, "max_bytes")
        self.parameters_schema: JSONObject = {
            "type": "object",
            "properties": {
                "path": {"type": "string", "minLength": 1},
                "content": {"type": "string"},
                "encoding": {"enum": ["utf-8", "base64"], "default": "utf-8"},
                "mode": {"enum": ["overwrite", "append", "create"], "default": "overwrite"},
                "create_parents": {"type": "boolean", "default": False},
            },
            "required": ["path", "content"],
            "additionalProperties": False,
        }

    async def call(self, arguments: JSONObject) -> FileWritten:
        content: str = arguments["content"]
        if arguments.get("encoding", "utf-8") == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except binascii.Error as exc:
                raise InvalidToolArguments(f"not valid base64: {exc}", path=("content",)) from None
        else:
            try:
                data = content.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidToolArguments(
                    f"not encodable as UTF-8: {exc}", path=("content",)
                ) from None
        if len(data) > self._max:
            raise InvalidToolArguments(
                f"{len(data)} bytes is more than the {self._max} one write may take",
                path=("content",),
            )
        return await anyio.to_thread.run_sync(
            self._write,
            arguments["path"],
            data,
            arguments.get("mode", "overwrite"),
            arguments.get("create_parents", False),
        )

    def _write(self, path: str, data: bytes, mode: str, create_parents: bool) -> FileWritten:
        parts = self._workspace.components(path)
        if not parts:
            raise ToolFailed("IsADirectoryError", f"{path!r} is a directory")
        flags = os.O_WRONLY | os.O_CREAT | _OPEN
        if mode == "create":
            flags |= os.O_EXCL
        elif mode == "append":
            flags |= os.O_APPEND
        with self._workspace.directory(parts[:-1], path, create=create_parents) as dir_fd:
            try:
                fd = os.open(parts[-1], flags, 0o644, dir_fd=dir_fd)
            except OSError as exc:
                raise os_error(exc, path) from None
            try:
                info = os.fstat(fd)
                _require_regular(info, path)
                single_link(info, path)
                # Truncate only now: O_TRUNC would have emptied a file we then refuse.
                if mode == "overwrite":
                    os.ftruncate(fd, 0)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                size = os.fstat(fd).st_size
            except ToolError:
                raise
            except OSError as exc:
                raise os_error(exc, path) from None
            finally:
                os.close(fd)
        return FileWritten(path=path, bytes_written=len(data), size=size)


class FsList:
    """``fs.list``: list a directory of the workspace (not recursive; symlinks not followed).

    Args:
        workspace: the confining workspace.
        max_entries: the most entries one call returns.
    """

    name = "fs.list"
    description = (
        "List a folder in the workspace ('.' is the root). Returns names sorted, with type "
        "(file, directory, symlink, other) and size of files."
    )

    def __init__(self, workspace: Workspace, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._workspace = workspace
        self._max = _check_cap(max_entries, "max_entries")
        self.parameters_schema: JSONObject = {
            "type": "object",
            "properties": {"path": {"type": "string", "default": "."}},
            "additionalProperties": False,
        }

    async def call(self, arguments: JSONObject) -> DirListing:
        return await anyio.to_thread.run_sync(self._list, arguments.get("path", "."))

    def _list(self, path: str) -> DirListing:
        parts = self._workspace.components(path)
        entries: list[DirEntry] = []
        with self._workspace.directory(parts, path, target=True) as fd, os.scandir(fd) as scan:
            for item in scan:
                entries.append(_entry(item))
        entries.sort(key=lambda e: e.name)
        return DirListing(
            path=path, entries=entries[: self._max], truncated=len(entries) > self._max
        )


def _entry(item: os.DirEntry[str]) -> DirEntry:
    if item.is_symlink():
        return DirEntry(name=item.name, type="symlink")
    if item.is_dir(follow_symlinks=False):
        return DirEntry(name=item.name, type="directory")
    if item.is_file(follow_symlinks=False):
        return DirEntry(name=item.name, type="file", size=item.stat(follow_symlinks=False).st_size)
    return DirEntry(name=item.name, type="other")


def _require_regular(info: os.stat_result, path: str) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise ToolFailed("IsADirectoryError", f"{path!r} is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise ToolPermissionDenied(f"{path!r} is not a regular file")


def _pread_all(fd: int, limit: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    while limit > 0:
        chunk = os.pread(fd, limit, offset)
        if not chunk:
            break
        chunks.append(chunk)
        limit -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)
