"""Corpus files in and out: the first step of the text pipeline (read -> vectorize -> a
bag-of-words source -> train).

* :func:`read_corpus` reads ``.txt`` / ``.txt.gz`` (one document per line), a
  directory of ``*.txt`` files (one document per file), ``.csv`` and
  ``.jsonl`` / ``.jsonl.gz`` (one document per row / record); :class:`CorpusStream`
  reads the same formats one document at a time, for corpora larger than memory.
* :func:`write_corpus_lines` writes documents back as a one-per-line text file.

Then :mod:`topicvae.text.newsgroups` cleans Usenet posts and :mod:`topicvae.text.vectorizer`
counts words.

All user-facing errors are ``ValueError`` (``FileNotFoundError`` for missing
paths) with a one-line message that names the offending value and says what to do.
"""

from __future__ import annotations

import codecs
import contextvars
import gzip
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from topicvae.io.atomic import write_text_atomically

__all__ = ["CORPUS_FORMATS", "CorpusDocuments", "CorpusStream", "read_corpus", "write_corpus_lines"]


CORPUS_FORMATS = ".txt, .txt.gz, .csv, .csv.gz, .jsonl, .jsonl.gz or a directory of .txt files"


# ---------------------------------------------------------------------------
# Reading corpora
# ---------------------------------------------------------------------------


class CorpusDocuments(list):
    """The documents of a corpus (a list of str) and how many undecodable bytes were replaced.

    ``undecodable_bytes`` counts the bytes that ``errors="replace"`` turned into U+FFFD; it
    is 0 with ``errors="strict"`` (which raises instead) and with ``errors="ignore"``.
    """

    undecodable_bytes: int = 0


#: The bytes replaced so far by the reading in progress (a one-element list), or None.
_REPLACED_BYTES: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("replaced_bytes", default=None)
_COUNTED_REPLACE = "topicvae.counted-replace"


def _replace_and_count(error: UnicodeError) -> tuple[str, int]:
    # The "replace" handler, counting: one U+FFFD per undecodable sequence, as Python's does.
    if not isinstance(error, UnicodeDecodeError):
        raise error
    counter = _REPLACED_BYTES.get()
    if counter is not None:
        counter[0] += error.end - error.start
    return "\ufffd", error.end


codecs.register_error(_COUNTED_REPLACE, _replace_and_count)


def read_corpus(
    path: str | os.PathLike[str],
    *,
    text_column: str = "text",
    encoding: str = "utf-8",
    errors: str = "strict",
) -> list[str]:
    """Read the documents of a corpus file or directory.

    Parameters
    ----------
    path : str or path-like
        The corpus. The format follows the name:

        * ``*.txt`` / ``*.txt.gz``: one document per line; lines that are empty
          after ``strip()`` are skipped (they are not documents).
        * a directory: every ``*.txt`` file below it (recursively), sorted by path,
          one document per file; empty files are kept as empty documents so that
          document ``i`` is always file ``i``.
        * ``*.csv`` / ``*.csv.gz``: the column ``text_column``; empty cells give
          empty documents.
        * ``*.jsonl`` / ``*.jsonl.gz``: one JSON object per line, field
          ``text_column``; blank lines are skipped, ``null`` gives an empty document.
    text_column : str
        Column (CSV) or field (JSON lines) holding the text.
    encoding, errors : str
        Passed to the decoder. With UTF-8, a leading byte-order mark is ignored.

    Returns
    -------
    CorpusDocuments
        The documents, in file order: a list of str whose ``undecodable_bytes`` counts the
        bytes that ``errors="replace"`` replaced.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For an unsupported format, a missing column/field, undecodable bytes,
        malformed CSV/JSON, or a corpus without documents.
    """
    path = Path(path)
    decoding = _reading_encoding(encoding, errors)
    replaced = [0]
    token = _REPLACED_BYTES.set(replaced)
    try:
        documents = _read_documents(path, text_column, encoding, decoding, _COUNTED_REPLACE if errors == "replace" else errors)
    finally:
        _REPLACED_BYTES.reset(token)
    documents = CorpusDocuments(documents)
    documents.undecodable_bytes = replaced[0]
    return documents


def _read_documents(path: Path, text_column: str, encoding: str, decoding: str, errors: str) -> list[str]:
    return list(_iter_documents(path, text_column, encoding, decoding, errors))


def _check_corpus_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"corpus path '{path}' does not exist; pass an existing {CORPUS_FORMATS}."
        )


def _iter_documents(path: Path, text_column: str, encoding: str, decoding: str, errors: str) -> Iterator[str]:
    """The documents one at a time, with reading errors (and a corpus without documents) as one-line ValueErrors."""
    _check_corpus_exists(path)
    name = path.name.lower()
    if path.is_dir():
        documents = _text_directory_documents(path, decoding, errors)
    elif name.endswith((".txt", ".txt.gz")):
        documents = _line_documents(path, decoding, errors)
    elif name.endswith((".csv", ".csv.gz")):
        documents = _csv_column_documents(path, text_column, decoding, errors)
    elif name.endswith((".jsonl", ".jsonl.gz")):
        documents = _jsonl_field_documents(path, text_column, decoding, errors)
    else:
        raise ValueError(
            f"cannot read '{path}': unsupported corpus format; use {CORPUS_FORMATS}."
        )
    any_document = False
    try:
        for document in documents:
            any_document = True
            yield document
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"'{path}' is not valid {encoding} text ({exc.reason} at byte {exc.start}); "
            "pass the file's encoding (--encoding / encoding=, e.g. latin-1), or replace "
            "undecodable bytes (--decode-errors replace / errors='replace')."
        ) from exc
    except (gzip.BadGzipFile, EOFError) as exc:
        raise ValueError(
            f"'{path}' is not a complete gzip file ({exc}); re-create it, or drop the .gz "
            "suffix if it is not compressed."
        ) from exc
    if not any_document:
        raise ValueError(f"corpus '{path}' holds no documents; check the file and its format.")


class CorpusStream:
    """The documents of a corpus read one at a time, for corpora larger than memory.

    Iterating reads the file again from its start; at no point is more than one document
    (or, for CSV, one chunk of rows) held. The formats, options and errors are those of
    :func:`read_corpus`. ``undecodable_bytes`` counts the bytes ``errors="replace"``
    replaced during the last complete pass.
    """

    def __init__(self, path: str | os.PathLike[str], *, text_column: str = "text", encoding: str = "utf-8", errors: str = "strict"):
        self.path = Path(path)
        self.text_column = text_column
        self.encoding = encoding
        self.errors = errors
        self._decoding = _reading_encoding(encoding, errors)
        _check_corpus_exists(self.path)  # now, not at the first document
        self.undecodable_bytes = 0

    def __iter__(self) -> Iterator[str]:
        replaced = [0]
        documents = _iter_documents(
            self.path, self.text_column, self.encoding, self._decoding,
            _COUNTED_REPLACE if self.errors == "replace" else self.errors,
        )
        while True:
            # The counting error handler finds its counter in a context variable, which must
            # be set and reset in the same frame: around each step of the reading generator.
            token = _REPLACED_BYTES.set(replaced)
            try:
                document = next(documents)
            except StopIteration:
                break
            finally:
                _REPLACED_BYTES.reset(token)
            yield document
        self.undecodable_bytes = replaced[0]


def _reading_encoding(encoding: str, errors: str) -> str:
    """Validate ``encoding``/``errors``; read UTF-8 as ``utf-8-sig`` to drop a BOM."""
    try:
        canonical = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(
            f"encoding={encoding!r} is not a known codec; pass e.g. 'utf-8' or 'latin-1'."
        ) from None
    try:
        codecs.lookup_error(errors)
    except LookupError:
        raise ValueError(
            f"errors={errors!r} is not a codec error handler; pass 'strict', 'replace' "
            "or 'ignore'."
        ) from None
    # A BOM (common in files saved on Windows) would otherwise end up in the first
    # document, in the first CSV column name, or break json.loads on the first line.
    return "utf-8-sig" if canonical == "utf-8" else encoding


def _open_text(path: Path, encoding: str, errors: str) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding=encoding, errors=errors)
    return open(path, encoding=encoding, errors=errors)


def _line_documents(path: Path, encoding: str, errors: str) -> Iterator[str]:
    with _open_text(path, encoding, errors) as lines:
        for line in lines:
            if line.strip():
                yield line.rstrip("\n")


def _text_directory_documents(directory: Path, encoding: str, errors: str) -> Iterator[str]:
    files = sorted(p for p in directory.rglob("*.txt") if p.is_file())
    if not files:
        raise ValueError(
            f"directory '{directory}' contains no *.txt files; put one document per .txt "
            "file in it, or pass a corpus file instead."
        )
    for file in files:
        yield file.read_text(encoding=encoding, errors=errors)


#: Rows of a CSV corpus parsed at a time.
CSV_CHUNK_ROWS = 10_000


def _csv_column_documents(path: Path, column: str, encoding: str, errors: str) -> Iterator[str]:
    import pandas as pd  # imported lazily: pandas is slow to import and CSV is rare

    try:
        # dtype=str + no NA parsing: cells stay text ("123", "NA"), empty cells are "".
        chunks = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding=encoding, encoding_errors=errors,
            chunksize=CSV_CHUNK_ROWS,
        )
        for chunk in chunks:
            if column not in chunk.columns:
                raise ValueError(
                    f"text_column={column!r} not found in {path.name}; its columns are: "
                    f"{', '.join(map(str, chunk.columns))}. Pass --text-column / text_column= "
                    "with one of them."
                )
            yield from chunk[column].tolist()
    except pd.errors.EmptyDataError:
        raise ValueError(f"CSV corpus '{path}' is empty; it needs a header row.") from None
    except pd.errors.ParserError as exc:
        message = " ".join(str(exc).split())
        raise ValueError(
            f"cannot parse '{path}' as CSV ({message}); check its quoting and delimiters."
        ) from exc


def _jsonl_field_documents(path: Path, field: str, encoding: str, errors: str) -> Iterator[str]:
    with _open_text(path, encoding, errors) as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"line {line_number} of '{path}' is not valid JSON ({exc.msg}); "
                    "each line must be one JSON object."
                ) from None
            if not isinstance(record, dict):
                raise ValueError(
                    f"line {line_number} of '{path}' is a JSON {type(record).__name__}, "
                    "not an object; each line must be one JSON object."
                )
            if field not in record:
                raise ValueError(
                    f"text_column={field!r} not found on line {line_number} of {path.name}; "
                    f"its fields are: {', '.join(record)}. Pass --text-column / "
                    "text_column= with one of them."
                )
            text = record[field]
            if text is None:
                text = ""
            elif not isinstance(text, str):
                raise ValueError(
                    f"field {field!r} on line {line_number} of '{path}' is a JSON "
                    f"{type(text).__name__}, not a string; point text_column at the text."
                )
            yield text


# ---------------------------------------------------------------------------
# Writing corpora
# ---------------------------------------------------------------------------


def write_corpus_lines(texts: Iterable[str], path: str | os.PathLike[str]) -> int:
    """Write documents one per line, folding every whitespace run to one space.

    The file is UTF-8 (gzip-compressed if ``path`` ends with ``.gz``) and is
    written atomically: to a temporary file in the same directory, then renamed,
    so an error never leaves a half-written file at ``path``.

    Parameters
    ----------
    texts : iterable of str
        Documents. Newlines, tabs and other whitespace inside them become spaces.
    path : str or path-like
        Destination; missing parent directories are created.

    Returns
    -------
    int
        The number of lines written.

    Raises
    ------
    ValueError
        If a document is not a string or is empty after folding whitespace (a blank
        line would be skipped by :func:`read_corpus` and misalign later documents).
    """
    path = Path(path)

    def folded_lines() -> Iterator[str]:
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(
                    f"texts[{index}] is a {type(text).__name__}, not a string; pass text only."
                )
            # str.split() with no argument splits on every Unicode whitespace and line
            # break (\r, \x0b, \x85, \u2028 ...), so no break can survive inside a line.
            line = " ".join(text.split())
            if not line:
                raise ValueError(
                    f"texts[{index}] is empty after folding whitespace; drop empty "
                    "documents first (read_corpus skips blank lines, which would shift "
                    "every later document)."
                )
            yield line + "\n"

    count = 0

    def write(stream: IO[str]) -> None:
        nonlocal count
        for line in folded_lines():
            stream.write(line)
            count += 1

    write_text_atomically(path, write)
    return count
