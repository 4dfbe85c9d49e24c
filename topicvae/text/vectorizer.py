"""Documents to a sparse bag-of-words: :class:`TextVectorizer` wraps scikit-learn's
``CountVectorizer`` with topic-model defaults (a Unicode-aware word pattern that keeps combining
marks and CJK runs, NFC normalization, English stop words, document-frequency filters) and
returns ``float32`` CSR count matrices. It is saved as data (:meth:`TextVectorizer.to_config`
plus the vocabulary, one word per line), not as a pickle. The checks that warn about a
vocabulary that cannot hold topics (``DegenerateCorpusWarning``: unsegmented scripts, a token
pattern that misses most words) live here too.

All user-facing errors are ``ValueError`` with a one-line message that names the offending
value and says what to do.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import IO, Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer
from sklearn.utils.validation import check_is_fitted

from topicvae.io.atomic import write_text_atomically
from topicvae.text.newsgroups import strip_newsgroup_post

__all__ = [
    "DEFAULT_TOKEN_PATTERN",
    "DegenerateCorpusWarning",
    "TextVectorizer",
    "english_stop_words",
    "load_vocabulary",
    "unsegmented_text",
    "word_pattern",
    "words_missed_by_pattern",
]

logger = logging.getLogger(__name__)


#: Combining marks that belong inside words: the vowel signs and viramas of the Indic scripts
#: (whole blocks U+0900-U+0DFF: Devanagari to Sinhala), Thai, Lao, Tibetan, Myanmar and Khmer
#: signs, Hebrew points, Arabic harakat, and the generic combining diacritics. Python's ``\w``
#: does not match marks, so without them "हिन्दी" or "كِتَاب" falls apart into pieces.
_WORD_MARKS = (
    "\u0300-\u036f\u0483-\u0489\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u0610-\u061a\u064b-\u065f"
    "\u0670\u06d6-\u06dc\u06df-\u06e4\u06e7\u06e8\u06ea-\u06ed\u0900-\u0963\u0971-\u0dff\u0e31\u0e34-\u0e3a"
    "\u0e47-\u0e4e\u0eb1\u0eb4-\u0ebc\u0ec8-\u0ecd\u0f18\u0f19\u0f35\u0f37\u0f39\u0f3e\u0f3f\u0f71-\u0f84"
    "\u0f86\u0f87\u0f8d-\u0fbc\u102b-\u103e\u1056-\u1059\u105e-\u1060\u1062-\u1064\u1067-\u106d\u1071-\u1074"
    "\u1082-\u108d\u108f\u109a-\u109d\u17b4-\u17d3\u17dd\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
)


#: Chinese, Japanese and Korean characters: CJK ideographs, kana, hangul.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"


def word_pattern(min_length: int) -> str:
    """The token pattern of words of at least ``min_length`` characters in any script.

    A word starts with a letter and goes on with letters or combining marks (vowel signs,
    diacritics: ``_WORD_MARKS``), between characters that are neither; digits and ``_`` end
    it. With ``min_length`` 2 or more, Chinese, Japanese and Korean runs of any length are
    words too, since their words are mostly one to three characters once the text is segmented.
    """
    letter_or_mark = rf"(?:[^\W\d_]|[{_WORD_MARKS}])"
    word = rf"(?<![\w{_WORD_MARKS}])(?=[^\W\d_]){letter_or_mark}{{{int(min_length)},}}(?![\w{_WORD_MARKS}])"
    return rf"(?u){word}|[{_CJK}]+" if min_length > 1 else rf"(?u){word}"


#: Words of three or more letters in any script (with their vowel signs and diacritics), and
#: Chinese, Japanese and Korean words of any length. Digits and ``_`` are excluded, so
#: numbers, identifiers and most uuencoded/binary noise in Usenet posts never become tokens.
#: Text without spaces between words (unsegmented Chinese or Japanese) still gives one
#: "word" per sentence: :func:`unsegmented_text` warns about it.
DEFAULT_TOKEN_PATTERN = word_pattern(3)


def _shown_pattern(token_pattern: str) -> str:
    """How messages name a token pattern: the default by its description, others as written."""
    if token_pattern == DEFAULT_TOKEN_PATTERN:
        return "the default token_pattern (words of 3 or more letters and marks, CJK words of any length)"
    return f"token_pattern={token_pattern!r}"


def _composed(text: str) -> str:
    """``text`` in Unicode's composed form (NFC): "café" typed as "cafe" + a combining accent
    (macOS, some PDF extractors) is then the same word as "café", and the token pattern, which
    does not count combining marks as letters, does not cut it after "cafe"."""
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


@functools.cache
def english_stop_words() -> frozenset[str]:
    """The ``stop_words="english"`` list: scikit-learn's plus gensim's English stop words."""
    from gensim.parsing.preprocessing import STOPWORDS  # gensim is slow to import

    return frozenset(ENGLISH_STOP_WORDS) | frozenset(STOPWORDS)


_CONFIG_KEYS = (
    "min_df",
    "max_df",
    "max_features",
    "stop_words",
    "token_pattern",
    "min_word_length",
    "lowercase",
    "strip_newsgroup",
)


class TextVectorizer(BaseEstimator):
    """Bag-of-words counts for topic models, built on scikit-learn's ``CountVectorizer``.

    Parameters
    ----------
    min_df : int or float, default=5
        Keep words that occur in at least this many documents (int >= 1) or this
        fraction of documents (float in (0, 1]). Rare words carry no topic signal.
    max_df : int or float, default=0.5
        Drop words that occur in more than this many documents (int >= 1) or this
        fraction of documents (float in (0, 1]). Ubiquitous words fill every topic.
    max_features : int or None, default=2000
        Keep only this many of the most frequent remaining words (None: all).
    stop_words : "english", None or iterable of str, default="english"
        Words never counted. ``"english"`` is the union of scikit-learn's and
        gensim's English lists. Custom words are lowercased when ``lowercase``.
    token_pattern : str, default=DEFAULT_TOKEN_PATTERN
        Regular expression of a token (at most one capturing group); the default
        takes words of three or more letters of any script (with their vowel signs and
        diacritics), and Chinese, Japanese and Korean words of any length.
    min_word_length : int or None, default=None
        The shortest word kept, in letters and marks, in alphabetic scripts (Chinese, Japanese
        and Korean words are kept at any length): the token pattern becomes
        :func:`word_pattern` (``min_word_length``). None: as ``token_pattern`` says. Give
        either this or ``token_pattern``.
    lowercase : bool, default=True
        Lowercase text before tokenizing.
    strip_newsgroup : bool, default=False
        Apply :func:`strip_newsgroup_post` to every document first.

    Attributes
    ----------
    vocabulary_ : list of str
        The words, in column order.
    empty_documents_ : numpy.ndarray of int
        Indices of the documents without any vocabulary word in the last
        ``fit``/``fit_transform``/``transform`` call (their rows are all zero).
    n_empty_documents_ : int
        ``len(empty_documents_)``.
    """

    def __init__(
        self,
        *,
        min_df: int | float = 5,
        max_df: int | float = 0.5,
        max_features: int | None = 2000,
        stop_words: str | Iterable[str] | None = "english",
        token_pattern: str = DEFAULT_TOKEN_PATTERN,
        min_word_length: int | None = None,
        lowercase: bool = True,
        strip_newsgroup: bool = False,
    ) -> None:
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features
        self.stop_words = stop_words
        self.token_pattern = token_pattern
        self.min_word_length = min_word_length
        self.lowercase = lowercase
        self.strip_newsgroup = strip_newsgroup

    # -- public API ---------------------------------------------------------

    @property
    def effective_token_pattern(self) -> str:
        """The pattern that finds tokens: :func:`word_pattern` (``min_word_length``) when it is given, else ``token_pattern``."""
        return self.token_pattern if self.min_word_length is None else word_pattern(self.min_word_length)


    def fit(self, docs: Iterable[str], y: None = None) -> TextVectorizer:
        """Learn the vocabulary of ``docs``.

        Parameters
        ----------
        docs : iterable of str
        y : ignored

        Returns
        -------
        TextVectorizer
            ``self``, fitted.
        """
        self.fit_transform(docs)
        return self

    def fit_transform(self, docs: Iterable[str], y: None = None) -> sp.csr_matrix:
        """Learn the vocabulary of ``docs`` and return their counts.

        Parameters
        ----------
        docs : iterable of str
        y : ignored

        Returns
        -------
        scipy.sparse.csr_matrix of float32, shape (n_documents, n_words)

        Raises
        ------
        ValueError
            For invalid parameters or documents, or when no word survives the
            stop-word and document-frequency filters.
        """
        stop_words = self._validated_stop_words()
        self._check_options()
        docs = self._prepared(docs)
        if not docs:
            raise ValueError("docs is empty; pass at least one document to fit.")
        self._check_document_frequency_bounds(len(docs))

        counter = CountVectorizer(
            min_df=self.min_df,
            max_df=self.max_df,
            max_features=self.max_features,
            stop_words=stop_words,
            token_pattern=self.effective_token_pattern,
            lowercase=self.lowercase,
            dtype=np.float32,
        )
        missed = words_missed_by_pattern(docs, self.effective_token_pattern, lowercase=self.lowercase)
        try:
            counts = counter.fit_transform(docs)
        except ValueError as exc:
            raise self._empty_vocabulary_error(
                exc, len(docs), *self._token_document_frequencies(docs, stop_words), missed=missed
            ) from exc
        vocabulary = counter.get_feature_names_out().tolist()
        self._set_vocabulary(vocabulary)
        self._warn_if_pattern_misses_words(missed)
        return self._finish(counts)

    def _warn_if_pattern_misses_words(self, missed: tuple[float, list[str]]) -> None:
        share, examples = missed
        if share > PATTERN_MISS_LIMIT:
            warnings.warn(_pattern_misses_words(share, examples, self.effective_token_pattern), DegenerateCorpusWarning, stacklevel=3)

    def transform(self, docs: Iterable[str]) -> sp.csr_matrix:
        """Count the vocabulary words in ``docs``.

        Parameters
        ----------
        docs : iterable of str

        Returns
        -------
        scipy.sparse.csr_matrix of float32, shape (n_documents, len(vocabulary_))

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If called before ``fit`` (or :meth:`from_config`).
        """
        check_is_fitted(
            self,
            attributes=["vocabulary_"],
            msg="This %(name)s is not fitted yet; call fit(docs) first, or build it with "
            "TextVectorizer.from_config(config, vocabulary).",
        )
        return self._finish(self._counter.transform(self._prepared(docs)))

    def to_config(self) -> dict[str, Any]:
        """The options as a JSON-serializable dict (the vocabulary is saved apart).

        Returns
        -------
        dict
            Keys are the constructor's parameter names.
        """
        stop_words = self._validated_stop_words()
        self._check_options()
        if isinstance(self.stop_words, str):
            stop_words = self.stop_words  # "english": keep the name, not the list
        return {
            "min_df": _plain_number(self.min_df),
            "max_df": _plain_number(self.max_df),
            "max_features": None if self.max_features is None else int(self.max_features),
            "stop_words": stop_words,
            "token_pattern": self.token_pattern,
            "min_word_length": None if self.min_word_length is None else int(self.min_word_length),
            "lowercase": bool(self.lowercase),
            "strip_newsgroup": bool(self.strip_newsgroup),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], vocabulary: Iterable[str]) -> TextVectorizer:
        """Rebuild a fitted vectorizer from :meth:`to_config` output and a vocabulary.

        Parameters
        ----------
        config : mapping
            Options as returned by :meth:`to_config`; missing keys take defaults.
        vocabulary : iterable of str
            The words in column order (e.g. from :func:`load_vocabulary`).

        Returns
        -------
        TextVectorizer
            Fitted: ``transform`` gives the same output as the original.
        """
        if not isinstance(config, Mapping):
            raise ValueError(
                f"config must be a dict as returned by to_config(), got {type(config).__name__}."
            )
        unknown = sorted(set(config) - set(_CONFIG_KEYS))
        if unknown:
            raise ValueError(
                f"config has unknown keys {unknown}; the valid keys are {list(_CONFIG_KEYS)}."
            )
        vectorizer = cls(**config)
        vectorizer._validated_stop_words()
        vectorizer._check_options()
        words = [vocabulary] if isinstance(vocabulary, str) else list(vocabulary)
        _check_vocabulary(words, source="vocabulary")
        vectorizer._set_vocabulary(words)
        return vectorizer

    def save_vocabulary(self, path: str | os.PathLike[str]) -> None:
        """Write ``vocabulary_`` to ``path``, one word per line (UTF-8, atomic).

        Read it back with :func:`load_vocabulary`.
        """
        check_is_fitted(self, attributes=["vocabulary_"])
        for word in self.vocabulary_:
            if word != word.strip() or len(word.splitlines()) != 1:
                raise ValueError(
                    f"vocabulary word {word!r} has surrounding whitespace or a line break "
                    "and cannot be stored one per line; use a token_pattern without them."
                )

        def write(stream: IO[str]) -> None:
            stream.writelines(word + "\n" for word in self.vocabulary_)

        write_text_atomically(Path(path), write)

    def build_analyzer(self) -> Callable[[str], list[str]]:
        """A function from one document to the tokens ``fit`` counts, in reading order.

        The same stripping, lowercasing, token pattern and stop words as ``fit``; with
        :meth:`set_vocabulary_from_frequencies`, it lets a corpus too large for memory be
        counted one document at a time (:mod:`topicvae.text.shards`).
        """
        stop_words = self._validated_stop_words()
        self._check_options()
        analyze = CountVectorizer(
            stop_words=stop_words, token_pattern=self.effective_token_pattern, lowercase=self.lowercase
        ).build_analyzer()
        if self.strip_newsgroup:
            return lambda doc: analyze(self._normalized(strip_newsgroup_post(doc)))
        return lambda doc: analyze(self._normalized(doc))

    def set_vocabulary_from_frequencies(
        self,
        terms: list[str],
        document_frequencies: np.ndarray,
        term_frequencies: np.ndarray,
        n_documents: int,
        *,
        sample: Sequence[str] = (),
    ) -> list[str]:
        """Choose the vocabulary ``fit`` would choose from these counts, and become fitted with it.

        ``terms`` are the distinct tokens of ``n_documents`` documents (as
        :meth:`build_analyzer` gives them), with the number of documents each occurs in and
        its number of occurrences. The rule is CountVectorizer's, step for step: terms in
        alphabetical order; keep those with min_df <= document frequency <= max_df (fractions
        of ``n_documents``, empty documents included); if more than ``max_features`` remain,
        keep the ``max_features`` most frequent, ranked as CountVectorizer ranks them (its
        float32 totals and NumPy's default sort, so ties at the cut fall the same way).
        """
        self._validated_stop_words()
        self._check_options()
        if n_documents < 1:
            raise ValueError("docs is empty; pass at least one document to fit.")
        self._check_document_frequency_bounds(n_documents)
        missed = words_missed_by_pattern(sample, self.effective_token_pattern, lowercase=self.lowercase)
        if not terms:
            raise self._empty_vocabulary_error(ValueError("empty vocabulary"), n_documents, terms, document_frequencies, missed=missed)
        order = sorted(range(len(terms)), key=terms.__getitem__)
        sorted_terms = [terms[i] for i in order]
        dfs = np.asarray(document_frequencies, dtype=np.int64)[order]
        tfs = np.asarray(term_frequencies, dtype=np.int64)[order].astype(np.float32)
        high = self.max_df if _is_integer(self.max_df) else self.max_df * n_documents
        low = self.min_df if _is_integer(self.min_df) else self.min_df * n_documents
        mask = (dfs <= high) & (dfs >= low)
        if self.max_features is not None and mask.sum() > self.max_features:
            kept = (-tfs[mask]).argsort()[: self.max_features]
            limited = np.zeros(len(dfs), dtype=bool)
            limited[np.where(mask)[0][kept]] = True
            mask = limited
        vocabulary = [term for term, keep in zip(sorted_terms, mask) if keep]
        if not vocabulary:
            raise self._empty_vocabulary_error(ValueError("no terms remain"), n_documents, terms, document_frequencies, missed=missed)
        self._set_vocabulary(vocabulary)
        self._warn_if_pattern_misses_words(missed)
        return vocabulary

    # -- internals ----------------------------------------------------------

    def tokenize(self, docs: Iterable[str]) -> list[list[str]]:
        """Each document's vocabulary words in reading order (what sliding-window coherence reads).

        Uses the fitted vectorizer's own analyzer (stripping, lowercasing, token pattern, stop
        words), keeping only words of ``vocabulary_``.
        """
        check_is_fitted(self, "vocabulary_")
        analyze = self._counter.build_analyzer()
        vocabulary = set(self.vocabulary_)
        return [[token for token in analyze(doc) if token in vocabulary] for doc in self._prepared(docs)]

    def _prepared(self, docs: Iterable[str]) -> list[str]:
        if isinstance(docs, (str, bytes)):
            raise ValueError(
                "docs must be a list of documents, got a single string; wrap it in a list."
            )
        docs = list(docs)
        for index, doc in enumerate(docs):
            if not isinstance(doc, str):
                raise ValueError(
                    f"docs[{index}] is a {type(doc).__name__}, not a string; every "
                    "document must be text (missing values must be replaced by '')."
                )
        if self.strip_newsgroup:
            docs = [strip_newsgroup_post(doc) for doc in docs]
        return [self._normalized(doc) for doc in docs]

    def _normalized(self, text: str) -> str:
        """NFC (see ``_composed``); when lowercasing, Turkish dotted capital I as I, since
        "İ".lower() is "i" plus a combining dot that would cut "İstanbul" after its first letter."""
        text = _composed(text)
        return text.replace("\u0130", "I") if self.lowercase and "\u0130" in text else text

    def _set_vocabulary(self, vocabulary: list[str]) -> None:
        self.vocabulary_ = vocabulary
        # Transform counts exactly the stored words, in the stored order, so a
        # vectorizer fitted here and one rebuilt by from_config behave identically.
        # Stop words need no second pass: they can only be in the vocabulary if the
        # caller put them there on purpose.
        self._counter = CountVectorizer(
            vocabulary=vocabulary,
            token_pattern=self.effective_token_pattern,
            lowercase=self.lowercase,
            dtype=np.float32,
        )

    def _finish(self, counts: Any) -> sp.csr_matrix:
        counts = sp.csr_matrix(counts, dtype=np.float32)
        self.empty_documents_ = np.flatnonzero(np.diff(counts.indptr) == 0)
        self.n_empty_documents_ = int(self.empty_documents_.size)
        if self.n_empty_documents_:
            logger.info(
                "%d of %d documents contain no vocabulary word (all-zero rows)",
                self.n_empty_documents_,
                counts.shape[0],
            )
        return counts

    def _validated_stop_words(self) -> list[str] | str | None:
        """Return the stop list for CountVectorizer (a sorted list) or None."""
        stop_words = self.stop_words
        if stop_words is None:
            return None
        if isinstance(stop_words, str):
            if stop_words != "english":
                raise ValueError(
                    f"stop_words={stop_words!r} is invalid: pass 'english', None or a "
                    "list of words."
                )
            return sorted(english_stop_words())
        try:
            words = list(stop_words)
        except TypeError:
            raise ValueError(
                f"stop_words={stop_words!r} is invalid: pass 'english', None or a list of words."
            ) from None
        if not all(isinstance(word, str) for word in words):
            raise ValueError("stop_words must contain only strings (words to skip).")
        words = [self._normalized(word) for word in words]  # as the documents are
        if self.lowercase:
            words = [word.lower() for word in words]
        return sorted(set(words))

    def _check_options(self) -> None:
        for name in ("min_df", "max_df"):
            value = getattr(self, name)
            if not _is_count_or_fraction(value):
                raise ValueError(
                    f"{name}={value!r} is invalid: pass an integer >= 1 or a fraction in (0, 1]."
                )
        if self.max_features is not None and not (
            _is_integer(self.max_features) and self.max_features >= 1
        ):
            raise ValueError(
                f"max_features={self.max_features!r} is invalid: pass an integer >= 1 or None."
            )
        if self.min_word_length is not None:
            if not (_is_integer(self.min_word_length) and self.min_word_length >= 1):
                raise ValueError(f"min_word_length={self.min_word_length!r} is invalid: pass a whole number >= 1, or None.")
            if self.token_pattern != DEFAULT_TOKEN_PATTERN:
                raise ValueError(
                    f"min_word_length={self.min_word_length!r} and token_pattern={self.token_pattern!r} both say what a "
                    "word is: give one of them."
                )
        if not isinstance(self.token_pattern, str):
            raise ValueError(
                f"token_pattern={self.token_pattern!r} is invalid: pass a regular expression "
                "string."
            )
        try:
            groups = re.compile(self.token_pattern).groups
        except re.error as exc:
            raise ValueError(
                f"token_pattern={self.token_pattern!r} is not a valid regular expression "
                f"({exc})."
            ) from None
        if re.compile(self.token_pattern).fullmatch("") is not None:
            raise ValueError(
                f"token_pattern={self.token_pattern!r} matches the empty string: give a pattern of one word, "
                r"such as '(?u)\b\w+\b'."
            )
        if groups > 1:
            raise ValueError(
                f"token_pattern={self.token_pattern!r} has {groups} capturing groups; use at "
                "most one, e.g. with (?:...) for the others."
            )
        for name in ("lowercase", "strip_newsgroup"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name}={value!r} is invalid: pass True or False.")

    def _check_document_frequency_bounds(self, n_documents: int) -> None:
        # Checked before counting (CountVectorizer checks after, with a cryptic message).
        min_count = _document_count(self.min_df, n_documents)
        max_count = _document_count(self.max_df, n_documents)
        if _is_integer(self.min_df) and min_count > n_documents:
            raise ValueError(
                f"min_df={self.min_df} keeps only words in at least {self.min_df} documents, "
                f"but there are only {n_documents}; lower min_df (e.g. 1, or a fraction "
                "such as 0.01)."
            )
        if max_count < min_count:
            raise ValueError(
                f"max_df={self.max_df!r} allows words in at most {max_count:g} of the "
                f"{n_documents} documents, fewer than min_df={self.min_df!r} requires "
                f"({min_count:g}); raise max_df or lower min_df."
            )

    def _token_document_frequencies(self, docs: list[str], stop_words) -> tuple[list[str], np.ndarray]:
        """Every token of ``docs`` (after stop words) and the number of documents it occurs in.

        Only on the way to an error: what the filters had to choose from says why they kept nothing.
        """
        counter = CountVectorizer(stop_words=stop_words, token_pattern=self.effective_token_pattern, lowercase=self.lowercase, binary=True)
        try:
            presence = counter.fit_transform(docs)
        except ValueError:  # no token at all
            return [], np.zeros(0, dtype=np.int64)
        return counter.get_feature_names_out().tolist(), np.asarray(presence.sum(axis=0)).ravel()

    def _empty_vocabulary_error(
        self, exc: ValueError, n_documents: int, terms: Sequence[str] = (), document_frequencies=(), *,
        missed: tuple[float, list[str]] = (0.0, []),
    ) -> ValueError:
        """The error for a fit that kept no word, naming the cause the tokens show and a remedy that works.

        ``terms`` and ``document_frequencies`` are every token the documents hold (after stop
        words) and how many documents each occurs in.
        """
        # CountVectorizer raises these two plain ValueErrors; anything else is re-raised.
        message = str(exc)
        if "empty vocabulary" not in message and "no terms remain" not in message:
            return exc
        terms = list(terms)
        frequencies = np.asarray(document_frequencies, dtype=np.int64)
        # almost no word matched at all: the pattern, not the stop words or the filters (English
        # stop-word-only text leaves its 1- and 2-letter words unmatched too, but not 90% of them)
        if missed[0] > 0.9 and unsegmented_text(terms) is None:
            return ValueError(f"no word to count in the {n_documents} documents: " + _pattern_misses_words(*missed, self.effective_token_pattern) + ".")
        if not terms:
            return ValueError(
                f"no word to count in the {n_documents} documents: every token is a stop "
                "word or does not match token_pattern (or the documents are empty). "
                "Loosen stop_words (e.g. None) or token_pattern, and check that the right "
                "text column was read."
            )
        unsegmented = unsegmented_text(terms)
        if unsegmented is not None:
            return ValueError(
                f"no word recurs across the {n_documents} documents because the tokens are whole phrases "
                f"({unsegmented}): the text has no spaces between words (Chinese, Japanese, Thai...), and "
                "no document-frequency filter can fix that. Split the text into words separated by spaces "
                "first (e.g. with jieba for Chinese or MeCab for Japanese): the default token pattern keeps "
                "Chinese, Japanese and Korean words of any length."
            )
        low = _document_count(self.min_df, n_documents)
        widest = int(frequencies.argmax())
        if frequencies[widest] < low:
            return ValueError(
                f"no word occurs in min_df={self.min_df!r} documents or more: of the {len(terms)} distinct "
                f"tokens of the {n_documents} documents, the most widespread, {terms[widest]!r}, occurs in "
                f"{frequencies[widest]}; lower min_df to {max(1, int(frequencies[widest]))} or less, or pass more documents."
            )
        passing = np.flatnonzero(frequencies >= low)
        passing = passing[np.argsort(frequencies[passing], kind="stable")]
        needed = int(frequencies[passing[0]])  # the least widespread of them
        shown = ", ".join(f"{terms[i]!r} in {frequencies[i]}" for i in passing[:3]) + (", ..." if len(passing) > 3 else "")
        if _is_integer(self.max_df):
            remedy = f"raise max_df to {needed} or more"
        else:
            remedy = f"raise max_df to {math.ceil(needed / n_documents * 100) / 100:g} or more"
        return ValueError(
            f"every word in at least min_df={self.min_df!r} of the {n_documents} documents also occurs in more "
            f"than max_df={self.max_df!r} of them ({shown}); {remedy} (1.0 keeps every word), or lower min_df."
        )


class DegenerateCorpusWarning(UserWarning):
    """The bag-of-words a fit trains on can hardly hold topics (too few words, whole phrases as words, words lost by the token pattern)."""


#: The token pattern is checked on the first this many documents of a corpus.
PATTERN_CHECK_DOCUMENTS = 1000


#: Above this share of missed words, the token pattern does not fit the text.
PATTERN_MISS_LIMIT = 0.6


_LETTER = re.compile(r"[^\W\d_]")


def words_missed_by_pattern(docs: Iterable[str], token_pattern: str, *, lowercase: bool = True) -> tuple[float, list[str]]:
    """The share of space-separated words in which ``token_pattern`` finds no token, and a few of them.

    Only words holding a letter count (numbers and punctuation are meant to be dropped). In
    English about a third are missed by the default pattern (words of 1 or 2 letters); text whose
    words are mostly short (segmented Chinese) or hold characters the pattern does not match
    (the vowel signs of Indic scripts) loses most of them.
    """
    pattern = re.compile(token_pattern)
    total = missed = 0
    examples: list[str] = []
    for document in itertools.islice(docs, PATTERN_CHECK_DOCUMENTS):
        for word in document.split():
            if not _LETTER.search(word):
                continue
            total += 1
            if pattern.search(word.lower() if lowercase else word) is None:
                missed += 1
                if len(examples) < 5 and word not in examples:
                    examples.append(word)
    return (missed / total if total else 0.0), examples


def _pattern_misses_words(share: float, examples: Sequence[str], token_pattern: str) -> str:
    return (
        f"{_shown_pattern(token_pattern)} finds no word in {share:.0%} of the space-separated words "
        f"(e.g. {', '.join(repr(w) for w in examples)}): they are shorter than it allows, or hold characters it does "
        "not match; pass min_word_length=1 (--min-word-length 1) for words of any length, or token_pattern='\\S+' "
        "(--token-pattern '\\S+') for any run of non-space characters"
    )


#: Characters of scripts written without spaces between words: CJK ideographs, Japanese kana,
#: Thai, Lao, Khmer, Myanmar (Korean is written with spaces).
_UNSPACED_SCRIPTS = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1780-\u17ff\u1000-\u109f]"
)


def unsegmented_text(words: Sequence[str]) -> str | None:
    """A description of why ``words`` look like whole phrases rather than words, or None.

    Tokens are cut at spaces and punctuation, so text written without spaces between words
    (Chinese, Japanese, Thai...) turns every clause into one "word" that never recurs. The
    signs: the median token is long (12 characters or more, in any script), or the tokens in
    scripts written without spaces, at least 3 of them and 5% of all, have a median of 5
    characters or more (their words have 1 to 3), as in a corpus that mixes such text with
    another language.
    """
    if not words:
        return None
    median = float(np.median([len(word) for word in words]))
    unspaced = [word for word in words if _UNSPACED_SCRIPTS.search(word)]
    unspaced_median = float(np.median([len(word) for word in unspaced])) if unspaced else 0.0
    if median >= 12:
        described = f"median {median:g} characters"
    elif len(unspaced) >= max(3, 0.05 * len(words)) and unspaced_median >= 5:
        described = f"{len(unspaced)} in Chinese, Japanese or Thai script, median {unspaced_median:g} characters"
    else:
        return None
    example = max(unspaced or words, key=len)
    example = example if len(example) <= 24 else example[:24] + "..."
    return f"{described}, e.g. {example!r}"


def load_vocabulary(path: str | os.PathLike[str]) -> list[str]:
    """Read a vocabulary written by :meth:`TextVectorizer.save_vocabulary`.

    Parameters
    ----------
    path : str or path-like
        UTF-8 text, one word per line; blank lines and surrounding whitespace are
        ignored.

    Returns
    -------
    list of str
        The words in file (column) order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"vocabulary file '{path}' does not exist; pass the file written by "
            "save_vocabulary()."
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"vocabulary file '{path}' is not UTF-8 text ({exc.reason}).") from None
    words = [line.strip() for line in text.splitlines() if line.strip()]
    _check_vocabulary(words, source=f"vocabulary file '{path}'")
    return words


def _check_vocabulary(words: list[str], *, source: str) -> None:
    if not words:
        raise ValueError(f"{source} is empty; a vectorizer needs at least one word.")
    seen: set[str] = set()
    for word in words:
        if not isinstance(word, str) or not word:
            raise ValueError(f"{source} holds {word!r}; every entry must be a non-empty string.")
        if word in seen:
            raise ValueError(f"{source} lists {word!r} twice; every word must be unique.")
        seen.add(word)


def _is_integer(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def _is_count_or_fraction(value: Any) -> bool:
    if _is_integer(value):
        return value >= 1
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_)) and 0 < value <= 1


def _document_count(df: int | float, n_documents: int) -> float:
    """A min_df/max_df value as a number of documents, as CountVectorizer reads it."""
    return float(df) if _is_integer(df) else float(df) * n_documents


def _plain_number(value: int | float) -> int | float:
    return int(value) if _is_integer(value) else float(value)
