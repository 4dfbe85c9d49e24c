"""Model directories: data, not pickles.

A saved model is a directory with ``config.json`` (format version, package version, the
estimator's parameters and fitted facts), a ``weights.pt`` holding only a state dict of tensors
(read back with ``torch.load(..., weights_only=True)``, which refuses pickled code), and any
text files the estimator needs (a vocabulary). Directories are written next to their final
place and moved there at the end, so an error never leaves a half-written model behind.

A training checkpoint is one file, ``checkpoint.pt``, written by :func:`write_checkpoint` to a
temporary file in the same directory, flushed to disk and renamed over the previous one, so
that a crash or a kill at any moment leaves either the old checkpoint or the new one. It holds
only tensors, dicts, lists, tuples, strings, numbers, booleans and None, and
:func:`read_checkpoint` reads it with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from topicvae.io.atomic import write_file_atomically

__all__ = [
    "FORMAT_VERSION", "RESTORE_ADVICE", "CONFIG_FILE", "WEIGHTS_FILE", "CHECKPOINT_FILE", "CHECKPOINT_FORMAT_VERSION", "ModelFileError",
    "write_model_directory", "read_config", "interpreting_config", "load_weights", "write_file_atomically", "write_checkpoint", "read_checkpoint",
]

#: Version of the saved-model layout.
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "weights.pt"
#: The training checkpoint inside a checkpoint directory, and the version of its layout.
CHECKPOINT_FILE, CHECKPOINT_FORMAT_VERSION = "checkpoint.pt", 1
#: The remedy for a model directory that cannot be read: its files cannot be re-saved from it.
RESTORE_ADVICE = "restore the model directory from a copy, or fit the model again"


class ModelFileError(ValueError):
    """A saved model directory that cannot be loaded."""


#: What ``torch.load(..., weights_only=True)`` says when a file holds pickled objects it will not
#: rebuild (code could run): the only case in which the file is whole but refused.
_UNSAFE_PICKLE_MARKER = "Weights only load failed"


def _unreadable_tensor_file(path: Path, error: BaseException, remedy: str) -> str:
    """One line saying why ``torch.load(path, weights_only=True)`` failed, and what to do.

    Three causes call for different remedies: an empty file and a damaged or cut one (an
    interrupted copy or a full disk) can only be restored or rebuilt (``remedy``); a whole
    file holding pickled objects was refused on purpose, since unpickling runs code.
    """
    size = path.stat().st_size if path.is_file() else 0
    if size == 0:
        return f"{path} is empty (0 bytes; an interrupted copy or a full disk): {remedy}"
    reason = str(error).strip()
    with open(path, "rb") as handle:
        head = handle.read(2)
    # whole: a zip archive (torch.save's format) or a plain pickle (its protocol byte first); a
    # file cut to its first bytes ("P", "PK") is neither, whatever the unpickler said about it
    whole = zipfile.is_zipfile(path) or head[:1] == b"\x80"
    if whole and isinstance(error, pickle.UnpicklingError) and _UNSAFE_PICKLE_MARKER in reason:
        return (
            f"{path} holds pickled Python objects (UnpicklingError), which topicvae never loads since unpickling can "
            "run code: only use files from people you trust, written by topicvae (tensors only); " + remedy
        )
    # torch's messages run over several sentences of advice: the first one says what happened
    detail = reason.splitlines()[0].split(". ")[0] if reason else type(error).__name__
    detail = f"{type(error).__name__}: {detail}" if whole else "not a whole torch file"
    return f"{path} is damaged or incomplete ({size} byte{'s' if size != 1 else ''}; {detail}): {remedy}"


def plain(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays (inside lists, tuples and dicts too) as Python values.

    Estimator parameters may be NumPy numbers (a ``GridSearchCV`` over ``np.arange`` passes
    them); config.json and checkpoints hold plain JSON values, which ``weights_only`` loading
    accepts.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def write_model_directory(target: str | os.PathLike, config: dict, model: nn.Module, text_files: Mapping[str, str] = {}) -> Path:
    """Write ``config.json``, ``weights.pt`` and ``text_files`` atomically into ``target``."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory: choose another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    names = [CONFIG_FILE, WEIGHTS_FILE, *text_files]
    try:
        (staging / CONFIG_FILE).write_text(json.dumps(plain(config), indent=2) + "\n", encoding="utf-8")
        for name, text in text_files.items():
            (staging / name).write_text(text, encoding="utf-8")
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, staging / WEIGHTS_FILE)
        if target.exists():
            for name in names:
                os.replace(staging / name, target / name)
            staging.rmdir()
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def read_config(directory: str | os.PathLike, *, estimator: str, required: tuple[str, ...] = ()) -> dict:
    """The parsed ``config.json`` of a model directory written for ``estimator``, checked."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise ModelFileError(f"{directory} is not a saved topicvae model: missing {CONFIG_FILE}")
    try:
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(
            f"{directory / CONFIG_FILE} is damaged or incomplete (not valid JSON: {error}): {RESTORE_ADVICE}"
        ) from None
    if not isinstance(config, dict):
        raise ModelFileError(f"{directory / CONFIG_FILE} does not hold a model configuration (it is damaged or was edited): {RESTORE_ADVICE}")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{directory} has model format {version!r}, this topicvae reads up to {FORMAT_VERSION}: upgrade topicvae"
        )
    written_by = config.get("estimator", "TopicModel")  # models saved before images existed
    if written_by != estimator:
        if not (isinstance(written_by, str) and written_by.isidentifier()):  # an edited config: keep the message one line
            raise ModelFileError(f"{directory / CONFIG_FILE} names the estimator {written_by!r}, not {estimator}: it is damaged or was edited")
        raise ModelFileError(f"{directory} holds a model saved by {written_by}, not {estimator}: load it with {written_by}.load")
    missing = [n for n in (*required, WEIGHTS_FILE) if not (directory / n).is_file()]
    if missing:
        raise ModelFileError(f"{directory} is not a complete saved model: missing {', '.join(missing)}; {RESTORE_ADVICE}")
    return config


@contextmanager
def interpreting_config(directory: str | os.PathLike) -> Iterator[None]:
    """Turn any error met while rebuilding an estimator from its config into a one-line ModelFileError.

    read_config checks the format version and the files; the fields inside are the estimator's
    to read, and a hand-edited or damaged config can make that fail anywhere (a missing key, a
    list where a mapping belongs, a number that is not a size).
    """
    try:
        yield
    except ModelFileError:
        raise
    except (LookupError, TypeError, ValueError, AttributeError) as error:  # LookupError: KeyError, IndexError
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelFileError(
            f"{Path(directory) / CONFIG_FILE} does not describe a model this topicvae can rebuild "
            f"({type(error).__name__}: {reason}): it is damaged or was edited; {RESTORE_ADVICE}"
        ) from None


def load_weights(directory: str | os.PathLike, model: nn.Module, *, described_by: str = "its config") -> None:
    """Fill ``model`` from ``weights.pt`` without unpickling objects.

    Every tensor's shape is checked against the model that ``described_by`` (the config, and the
    vocabulary where there is one) describes, so that files from different models are refused
    with the name of the first tensor that disagrees.
    """
    path = Path(directory) / WEIGHTS_FILE
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelFileError(_unreadable_tensor_file(path, error, RESTORE_ADVICE)) from None
    expected = model.state_dict()
    for name, tensor in state.items() if isinstance(state, dict) else ():
        if name in expected and isinstance(tensor, torch.Tensor) and tensor.shape != expected[name].shape:
            raise ModelFileError(
                f"{path} holds {name} of shape {tuple(tensor.shape)}, but {described_by} describe shape "
                f"{tuple(expected[name].shape)}: the files come from different models; {RESTORE_ADVICE}"
            )
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        first_line = str(error).strip().splitlines()[-1].strip() if str(error).strip() else type(error).__name__
        raise ModelFileError(
            f"{path} does not match its config ({first_line}): the files come from different models; {RESTORE_ADVICE}"
        ) from None


def write_checkpoint(directory: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` (plain data and tensors) atomically to ``directory/checkpoint.pt``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": CHECKPOINT_FORMAT_VERSION, **checkpoint}
    return write_file_atomically(directory / CHECKPOINT_FILE, lambda handle: torch.save(payload, handle))


def read_checkpoint(directory: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint in ``directory``, read without unpickling objects."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"there is no checkpoint at {path}: nothing to resume, fit without resuming")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelFileError(_unreadable_tensor_file(path, error, f"delete {path.parent} to start the run again")) from None
    version = checkpoint.get("format_version") if isinstance(checkpoint, dict) else None
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has checkpoint format {version!r}, this topicvae reads up to {CHECKPOINT_FORMAT_VERSION}: "
            "resume it with the topicvae that wrote it, or delete it to start again"
        )
    return checkpoint


def package_version() -> str:
    """topicvae's version, as saved configs record it."""
    from topicvae import __version__

    return __version__
