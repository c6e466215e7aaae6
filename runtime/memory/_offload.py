"""Offloading: large tool outputs go to a file; the context keeps a preview and the path.

A tool result of more than ``threshold_bytes`` (UTF-8) is written whole to
``<root>/<agent>/<item id>.txt`` (by default ``<data_dir>/offload/...``) and the item that is
recorded holds a preview instead: the first ``head_chars`` and the last ``tail_chars``
characters around a marker line that says how much was left out and where the full text is. The
item's metadata carries ``offload_path`` and ``offload_bytes``.

The file is written to a temporary name and renamed into place, so a reader sees the whole file
or none. Files are not deleted when their items are pruned (an agent may still hold the path);
remove ``<root>/<agent>`` to clear an agent's offloaded outputs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import anyio.to_thread

from .._errors import InvalidArgument

__all__ = ["Offloaded", "Offloader", "safe_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_name(name: str) -> str:
    """``name`` as one safe path component: bytes outside ``[A-Za-z0-9_-]`` become ``%XX``.

    Reversible and collision-free, and never ``.``, ``..``, empty, or containing a separator.
    """
    if not name:
        return "%"
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), name)


class Offloaded:
    """The outcome of :meth:`Offloader.offload` for a text that was too large.

    Attributes:
        preview: the text to keep in context.
        path: where the full text is.
        size: the full text's size in UTF-8 bytes.
    """

    __slots__ = ("path", "preview", "size")

    def __init__(self, preview: str, path: Path, size: int) -> None:
        self.preview = preview
        self.path = path
        self.size = size


class Offloader:
    """Writes oversized tool outputs to files and makes their previews.

    Args:
        root: the directory for offloaded files (``<data_dir>/offload`` by convention; see
            :meth:`in_data_dir`). Created when first needed.
        threshold_bytes: texts larger than this (UTF-8 bytes) are offloaded.
        head_chars: characters kept from the start of the text.
        tail_chars: characters kept from the end of the text.

    Raises:
        InvalidArgument: a size is negative, or the preview would not be smaller than the
            threshold (offloading would then not shrink anything).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        threshold_bytes: int = 8192,
        head_chars: int = 1500,
        tail_chars: int = 500,
    ) -> None:
        if threshold_bytes < 1 or head_chars < 0 or tail_chars < 0:
            raise InvalidArgument("threshold_bytes must be >= 1 and head/tail_chars >= 0")
        if head_chars + tail_chars >= threshold_bytes:
            raise InvalidArgument(
                f"head_chars + tail_chars ({head_chars + tail_chars}) must be below "
                f"threshold_bytes ({threshold_bytes})"
            )
        self.root = Path(root)
        self.threshold_bytes = threshold_bytes
        self.head_chars = head_chars
        self.tail_chars = tail_chars

    @classmethod
    def in_data_dir(cls, data_dir: str | os.PathLike[str], **options: int) -> Offloader:
        """An offloader writing under ``data_dir/offload``."""
        return cls(Path(data_dir) / "offload", **options)

    def path_for(self, agent_id: str, item_id: str) -> Path:
        """Where the full text of item ``item_id`` of ``agent_id`` goes."""
        return self.root / safe_name(agent_id) / f"{safe_name(item_id)}.txt"

    def preview(self, text: str, path: Path, size: int) -> str:
        """The head, a marker line naming the file, and the tail."""
        head = text[: self.head_chars]
        tail = text[len(text) - self.tail_chars :] if self.tail_chars else ""
        omitted = len(text) - len(head) - len(tail)
        marker = (
            f"\n[... {omitted} characters omitted; the full output ({size} bytes) "
            f"is in the file {path} ...]\n"
        )
        return head + marker + tail

    async def offload(self, agent_id: str, item_id: str, text: str) -> Offloaded | None:
        """Write ``text`` to its file when it is over the threshold; None when it is not.

        Raises:
            OSError: the file could not be written (nothing is left at the final path).
        """
        # A character is 1 to 4 bytes in UTF-8: most texts are decided without encoding them.
        if len(text) * 4 <= self.threshold_bytes:
            return None
        # "replace": a lone surrogate (possible in a str, impossible in UTF-8) becomes "?".
        data = text.encode("utf-8", errors="replace")
        if len(data) <= self.threshold_bytes:
            return None
        path = self.path_for(agent_id, item_id)
        await anyio.to_thread.run_sync(_write_atomically, path, data)
        return Offloaded(self.preview(text, path, len(data)), path, len(data))


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
