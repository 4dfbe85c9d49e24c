"""Writing a file so that it is either whole or absent: the one rule every writer here uses.

Kept free of torch so that the text pipeline can use it without loading torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["write_file_atomically", "write_json_atomically"]


def write_file_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on a temporary file next to ``path``, flush it to disk, then rename it to ``path``.

    os.replace is atomic within a directory, so ``path`` always holds either its previous
    content or the complete new one, whatever happens meanwhile (an error, Ctrl-C, SIGKILL,
    a power cut once the rename is on disk). The temporary file has a fixed name, so one left
    by a killed process is simply overwritten by the next write. The parent directory is
    created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # the rename itself is durable once the directory entry is on disk
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    return path


def write_json_atomically(path: str | os.PathLike, payload: Any, *, default: Callable[[Any], Any] | None = None) -> Path:
    """``payload`` as indented UTF-8 JSON with a final newline, written by :func:`write_file_atomically`."""
    text = json.dumps(payload, indent=2, default=default) + "\n"
    return write_file_atomically(path, lambda handle: handle.write(text.encode("utf-8")))
