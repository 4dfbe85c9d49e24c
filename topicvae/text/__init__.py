"""Text to bag-of-words: corpus readers and writers (:mod:`~topicvae.text.corpus`), Usenet
cleaning and 20 Newsgroups (:mod:`~topicvae.text.newsgroups`), the vectorizer
(:mod:`~topicvae.text.vectorizer`), and sharded bags of words for corpora that do not fit in
memory (:mod:`~topicvae.text.shards`). No torch here.

The public names of the text pipeline are importable from ``topicvae.text`` as they were before
it became a package (``from topicvae.text import read_corpus, TextVectorizer``).
"""

from topicvae.text.corpus import CorpusDocuments, CorpusStream, read_corpus, write_corpus_lines
from topicvae.text.newsgroups import strip_newsgroup_footer, strip_newsgroup_header, strip_newsgroup_post, strip_newsgroup_quoting
from topicvae.text.vectorizer import (
    DEFAULT_TOKEN_PATTERN, DegenerateCorpusWarning, TextVectorizer, english_stop_words, load_vocabulary, unsegmented_text,
    word_pattern, words_missed_by_pattern,
)

__all__ = [
    "DEFAULT_TOKEN_PATTERN", "TextVectorizer", "english_stop_words", "load_vocabulary", "read_corpus", "CorpusDocuments",
    "CorpusStream", "strip_newsgroup_footer", "strip_newsgroup_header", "strip_newsgroup_post", "strip_newsgroup_quoting",
    "unsegmented_text", "words_missed_by_pattern", "DegenerateCorpusWarning", "write_corpus_lines", "word_pattern",
]
