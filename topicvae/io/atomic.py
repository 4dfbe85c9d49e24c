"""Writing a file so that it is either whole or absent: the one rule every writer here uses.

Kept free of torch so that the text pipeline can use it without loading torch.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["write_file_atomically", "write_json_atomically", "write_text_atomically"]


def write_file_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on a temporary file next to ``path``, flush it to disk, then rename it to ``path``.

    os.replace is atomic within a directory, so ``path`` always holds either its previous
    content or the complete new one, whatever happens meanwhile (an error, Ctrl-C, SIGKILL,
    a power cut once the rename is on disk). The temporary file has a fixed name, so one left
    by a killed process is simply overwritten by the next write. The parent directory is
    created when missing.

    A symbolic link keeps being one: the file it points to is written. A named pipe, a
    terminal or a device (``/dev/null``, ``/dev/stdout``) is written directly, since renaming
    over it would replace it. Errors name ``path``, not the temporary file.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # (through links: /dev/stdout is one)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory: give the path of a file to write")
        # A named pipe, a terminal or a device (/dev/null, /dev/stdout): renaming a file over it
        # would replace it, so it is written directly (it holds no earlier content to protect).
        with open(path, "wb") as handle:
            write(handle)
        return path
    if path.is_symlink():  # a link to a file, or to none yet: write where it points, and keep the link
        path = Path(os.path.realpath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FileExistsError(f"cannot write {path}: {_first_file_among_parents(path)} is a file, not a folder") from None
    except OSError as error:
        raise type(error)(f"cannot create the folder of {path} ({error.strerror}): choose a writable location") from None
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.filename in (str(temporary), str(path)):  # the OS's message would name the temporary file
            raise type(error)(f"cannot write {path} ({error.strerror}): choose a writable location") from None
        raise
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


def _first_file_among_parents(path: Path) -> Path:
    """The nearest folder on the way to ``path`` that exists as a file (why its folder cannot be made)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return path.parent


def write_text_atomically(path: Path, write: Any) -> None:
    """Call ``write(stream)`` on a UTF-8 stream (gzip-compressed for a ``.gz`` path) and move the result to ``path``."""

    def write_bytes(raw: IO[bytes]) -> None:
        if path.name.lower().endswith(".gz"):
            # mtime=0 and the final name in the header make the output reproducible.
            with gzip.GzipFile(filename=path.name[: -len(".gz")], mode="wb", fileobj=raw, mtime=0) as compressed:
                _write_utf8(compressed, write)
        else:
            _write_utf8(raw, write)

    write_file_atomically(path, write_bytes)


def _write_utf8(binary: IO[bytes], write: Any) -> None:
    stream = io.TextIOWrapper(binary, encoding="utf-8", newline="\n")
    write(stream)
    stream.flush()
    stream.detach()  # leave closing `binary` to its owner
