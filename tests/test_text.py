"""Tests for topicvae.text.corpus: readers, writer, Usenet stripping, TextVectorizer."""

from __future__ import annotations

import gzip
import json
import logging

import numpy as np
import pytest
from conftest import sklearn_newsgroup_helpers
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from topicvae.text.corpus import read_corpus, write_corpus_lines
from topicvae.text.vectorizer import DEFAULT_TOKEN_PATTERN, TextVectorizer, english_stop_words, load_vocabulary
from topicvae.text.newsgroups import strip_newsgroup_footer, strip_newsgroup_header, strip_newsgroup_post, strip_newsgroup_quoting

# ---------------------------------------------------------------------------
# read_corpus
# ---------------------------------------------------------------------------


def test_read_txt_skips_blank_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first doc\n\n   \nsecond doc\r\nthird doc", encoding="utf-8")
    assert read_corpus(path) == ["first doc", "second doc", "third doc"]


def test_read_txt_gz(tmp_path):
    path = tmp_path / "corpus.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as stream:
        stream.write("caf\u00e9 au lait\n\nna\u00efve doc\n")
    assert read_corpus(path) == ["caf\u00e9 au lait", "na\u00efve doc"]


def test_read_txt_ignores_utf8_byte_order_mark(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffhello world\n".encode())
    assert read_corpus(path) == ["hello world"]


def test_read_directory_one_document_per_file_sorted_by_path(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("in b\nsecond line", encoding="utf-8")
    (tmp_path / "a.txt").write_text("top level", encoding="utf-8")
    (tmp_path / "b" / "1.txt").write_text("", encoding="utf-8")  # kept: file i = doc i
    (tmp_path / "notes.md").write_text("not a corpus file", encoding="utf-8")
    assert read_corpus(tmp_path) == ["top level", "", "in b\nsecond line"]


def test_read_directory_without_txt_files(tmp_path):
    (tmp_path / "notes.md").write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no \*\.txt files"):
        read_corpus(tmp_path)


def test_read_csv_column(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text('id,text\n1,"hello, world"\n2,\n3,"multi\nline"\n4,NA\n', encoding="utf-8")
    assert read_corpus(path) == ["hello, world", "", "multi\nline", "NA"]
    assert read_corpus(path, text_column="id") == ["1", "2", "3", "4"]


def test_read_csv_missing_column_names_the_columns(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text("id,text\n1,hello\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"text_column='body' not found in corpus\.csv.*id, text"):
        read_corpus(path, text_column="body")


def test_read_jsonl_and_jsonl_gz(tmp_path):
    records = [
        {"id": 1, "text": "first"},
        {"id": 2, "text": None},
        {"id": 3, "body": "x", "text": "third"},
    ]
    lines = "\n".join(json.dumps(record) for record in records) + "\n\n"
    plain = tmp_path / "corpus.jsonl"
    plain.write_text(lines, encoding="utf-8")
    packed = tmp_path / "corpus.jsonl.gz"
    packed.write_bytes(gzip.compress(lines.encode()))
    assert read_corpus(plain) == ["first", "", "third"]
    assert read_corpus(packed) == ["first", "", "third"]


def test_read_jsonl_missing_field_names_line_and_fields(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "a"}\n{"id": 7, "body": "b"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"text_column='text' not found on line 2.*id, body"):
        read_corpus(path)


def test_read_jsonl_invalid_json(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "a"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 .* not valid JSON"):
        read_corpus(path)


def test_read_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_corpus(tmp_path / "nope.txt")


def test_read_unsupported_suffix(tmp_path):
    path = tmp_path / "corpus.docx"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported corpus format"):
        read_corpus(path)


def test_read_undecodable_bytes_suggests_encoding(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not valid utf-8 text.*--encoding"):
        read_corpus(path)
    assert read_corpus(path, encoding="latin-1") == ["caf\u00e9"]
    assert read_corpus(path, errors="replace") == ["caf\ufffd"]


def test_read_bad_encoding_name(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="encoding='klingon'"):
        read_corpus(path, encoding="klingon")


def test_read_corpus_without_documents(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no documents"):
        read_corpus(path)


def test_read_truncated_gzip(tmp_path):
    path = tmp_path / "corpus.txt.gz"
    path.write_bytes(gzip.compress(b"some text\n" * 100)[:30])
    with pytest.raises(ValueError, match="not a complete gzip file"):
        read_corpus(path)


# ---------------------------------------------------------------------------
# write_corpus_lines
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.txt", "out.txt.gz"])
def test_write_corpus_lines_round_trip_folds_whitespace(tmp_path, name):
    texts = ["first\ndocument\n\nwith  lines", "\ttabs\tand\r\nCRLF ", "caf\u00e9\u2028na\u00efve"]
    path = tmp_path / "sub" / name
    assert write_corpus_lines(texts, path) == 3
    assert read_corpus(path) == [
        "first document with lines",
        "tabs and CRLF",
        "caf\u00e9 na\u00efve",
    ]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_write_corpus_lines_gz_is_reproducible(tmp_path):
    first, second = tmp_path / "a.txt.gz", tmp_path / "b" / "a.txt.gz"
    write_corpus_lines(["same text"], first)
    write_corpus_lines(["same text"], second)
    assert first.read_bytes() == second.read_bytes()


def test_write_corpus_lines_is_atomic(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old content\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        write_corpus_lines(["fine", " \n\t "], path)
    assert path.read_text(encoding="utf-8") == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_write_corpus_lines_rejects_non_text(tmp_path):
    with pytest.raises(ValueError, match=r"texts\[0\] is a float"):
        write_corpus_lines([float("nan")], tmp_path / "out.txt")


# ---------------------------------------------------------------------------
# Usenet stripping
# ---------------------------------------------------------------------------

POSTS = [
    # reply with attribution, quotes and a dashed signature
    "From: alice@example.edu (Alice)\nSubject: Re: Shuttle launch\nOrganization: Example U\n"
    "Lines: 12\n\nIn article <1993Apr5.1@x.edu> bob@x.edu (Bob) writes:\n"
    "> The launch was delayed again.\n>> By two days.\n\nIt was delayed by weather, not by the"
    " orbiter.\nNASA said: the next window opens Friday.\n\n-- \nAlice | alice@example.edu\n",
    # no signature: the last paragraph goes (scikit-learn's heuristic)
    "From: carol@example.com\nSubject: For sale: 486 motherboard\n\nAsking $100 or best offer."
    "\nShipping extra.\n\nEmail me if interested.\n",
    # no blank line at all: everything is header
    "From: dave@example.com\nSubject: test\nOnly header lines here",
    # pipe quotes, 'wrote:' attribution, CRLF endings and trailing blank lines
    "From: erin@example.org\r\nSubject: Re: guns\r\n\r\nfrank@example.org wrote:\r\n"
    "| Quoted from the FAQ\r\n|| twice quoted\r\nI disagree.\r\nQuoted from a book, page 3\r\n"
    "\r\n\r\n",
    # last line is a quote, dashes-only separator line before a footer
    "Subject: x\n\nbody line one\nbody line two\n------------\nsig line\n\n\n> trailing quote",
    # empty and whitespace-only posts
    "",
    "\n\n\n",
    "Subject: only\n\n",
]




@pytest.mark.parametrize("post", POSTS)
def test_stripping_equals_sklearn_private_helpers(post):
    header, footer, quoting = sklearn_newsgroup_helpers()
    assert strip_newsgroup_header(post) == header(post)
    assert strip_newsgroup_footer(post) == footer(post)
    assert strip_newsgroup_quoting(post) == quoting(post)
    assert strip_newsgroup_post(post) == quoting(footer(header(post)))
    assert strip_newsgroup_post(post, headers=False, quotes=False) == footer(post)


def test_strip_newsgroup_post_on_a_reply():
    stripped = strip_newsgroup_post(POSTS[0])
    assert "Subject" not in stripped and "writes:" not in stripped and "> " not in stripped
    assert "alice@example.edu" not in stripped  # signature gone
    assert "It was delayed by weather" in stripped
    assert "NASA said" not in stripped  # contains 'said:', dropped like scikit-learn does


# ---------------------------------------------------------------------------
# TextVectorizer
# ---------------------------------------------------------------------------

TINY = [
    "apple banana apple the cherry",
    "banana cherry cherry and durian",
    "apple durian elderberry of 42 x1 ok",
    "the and of",  # stop words only -> empty row
]


def loose(**options):
    """A vectorizer without document-frequency or size filters."""
    return TextVectorizer(**{"min_df": 1, "max_df": 1.0, "max_features": None, **options})


def test_counts_on_a_tiny_corpus_are_exact():
    vectorizer = loose()
    counts = vectorizer.fit_transform(TINY)
    assert vectorizer.vocabulary_ == ["apple", "banana", "cherry", "durian", "elderberry"]
    assert isinstance(counts, sp.csr_matrix) and counts.dtype == np.float32
    expected = np.array(
        [[2, 1, 1, 0, 0], [0, 1, 2, 1, 0], [1, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=np.float32
    )
    np.testing.assert_array_equal(counts.toarray(), expected)
    np.testing.assert_array_equal(vectorizer.transform(TINY).toarray(), expected)


def test_empty_documents_are_counted_not_fatal(caplog):
    vectorizer = loose()
    with caplog.at_level(logging.INFO, logger="topicvae.text.vectorizer"):
        vectorizer.fit(TINY)
    assert vectorizer.n_empty_documents_ == 1
    assert vectorizer.empty_documents_.tolist() == [3]
    assert "1 of 4 documents" in caplog.text
    counts = vectorizer.transform(["nothing known here", "apple", ""])
    assert vectorizer.empty_documents_.tolist() == [0, 2]
    assert vectorizer.n_empty_documents_ == 2
    assert counts.shape == (3, 5) and counts.sum() == 1


def test_default_stop_words_are_sklearn_plus_gensim():
    from gensim.parsing.preprocessing import STOPWORDS
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = english_stop_words()
    assert words >= ENGLISH_STOP_WORDS and words >= STOPWORDS
    # "doesn" and "computer" are gensim-only stop words
    vectorizer = loose().fit(["computer doesn work", "computer works well"])
    assert vectorizer.vocabulary_ == ["work", "works"]


def test_custom_and_disabled_stop_words():
    docs = ["The apple and THE banana", "the cherry"]
    assert loose(stop_words=["The", "apple"]).fit(docs).vocabulary_ == ["and", "banana", "cherry"]
    assert loose(stop_words=None).fit(docs).vocabulary_ == [
        "and", "apple", "banana", "cherry", "the"
    ]


def test_token_pattern_keeps_words_of_three_letters_or_more():
    docs = ["ab abc x1y2 h2o 1993 snake_case don't \u00e9t\u00e9s"]
    vectorizer = loose(stop_words=None).fit(docs)
    # digits and "_" are word characters, so "x1y2", "h2o" and "snake_case" give no token
    assert vectorizer.vocabulary_ == ["abc", "don", "\u00e9t\u00e9s"]


def test_min_df_and_max_df_filters():
    docs = ["apple banana", "apple cherry", "apple banana durian", "elderberry fig"]
    # apple in 3/4 docs, banana in 2, the rest in 1
    assert loose().set_params(min_df=2).fit(docs).vocabulary_ == ["apple", "banana"]
    assert loose().set_params(min_df=0.5).fit(docs).vocabulary_ == ["apple", "banana"]
    assert "apple" not in loose().set_params(max_df=0.5).fit(docs).vocabulary_
    assert loose().set_params(max_df=2).fit(docs).vocabulary_ == [
        "banana", "cherry", "durian", "elderberry", "fig"
    ]


def test_max_features_keeps_the_most_frequent():
    docs = ["apple apple apple banana banana cherry", "apple banana durian"]
    vectorizer = loose(max_features=2).fit(docs)
    assert vectorizer.vocabulary_ == ["apple", "banana"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("min_df", -1, r"min_df=-1 is invalid: pass an integer >= 1 or a fraction in \(0, 1\]"),
        ("min_df", 0, "min_df=0 is invalid"),
        ("min_df", 1.5, "min_df=1.5 is invalid"),
        ("min_df", True, "min_df=True is invalid"),
        ("max_df", 0.0, "max_df=0.0 is invalid"),
        ("max_df", "half", "max_df='half' is invalid"),
        ("max_features", 0, "max_features=0 is invalid"),
        ("max_features", 2.5, "max_features=2.5 is invalid"),
        ("stop_words", "french", "stop_words='french' is invalid"),
        ("stop_words", 3, "stop_words=3 is invalid"),
        ("token_pattern", "(", "token_pattern='\\(' is not a valid regular expression"),
        ("token_pattern", r"(a)(b)", "has 2 capturing groups"),
        ("lowercase", "yes", "lowercase='yes' is invalid"),
        ("strip_newsgroup", None, "strip_newsgroup=None is invalid"),
    ],
)
def test_invalid_options_raise_value_error_naming_them(option, value, message):
    vectorizer = TextVectorizer(**{option: value})  # construction never validates
    assert getattr(vectorizer, option) is value
    with pytest.raises(ValueError, match=message):
        vectorizer.fit(TINY)


def test_invalid_documents():
    with pytest.raises(ValueError, match="single string"):
        loose().fit("apple banana")
    with pytest.raises(ValueError, match=r"docs\[1\] is a float"):
        loose().fit(["apple", float("nan")])
    with pytest.raises(ValueError, match="docs is empty"):
        loose().fit([])


def test_empty_vocabulary_says_what_to_loosen():
    with pytest.raises(ValueError, match="every token is a stop word.*stop_words"):
        loose().fit(["the and of", "it is 42"])
    docs = ["apple banana", "cherry durian", "elderberry fig"]
    with pytest.raises(ValueError, match=r"no word occurs in min_df=2 documents or more: of the 6 distinct tokens of the 3 "
                                         r"documents, the most widespread, 'apple', occurs in 1; lower min_df to 1 or less"):
        loose().set_params(min_df=2).fit(docs)


def test_an_empty_vocabulary_names_the_filter_that_emptied_it_and_a_value_that_works():
    docs = ["common apple", "common pear", "common plum", "common fig", "rare kiwi"]
    # 'common' is in 4 of 5 documents, every other word in 1: min_df=2 leaves 'common', max_df=0.6 drops it
    with pytest.raises(ValueError, match=r"every word in at least min_df=2 of the 5 documents also occurs in more than "
                                         r"max_df=0.6 of them \('common' in 4\); raise max_df to 0.8 or more"):
        loose().set_params(min_df=2, max_df=0.6).fit(docs)
    assert loose().set_params(min_df=2, max_df=0.8).fit(docs).vocabulary_ == ["common"]  # the advice works
    with pytest.raises(ValueError, match=r"\('common' in 4\); raise max_df to 4 or more"):
        loose().set_params(min_df=2, max_df=3).fit(docs)


@pytest.mark.parametrize("text", [
    ["今天我们在厨房里用面粉和黄油烤了一个蛋糕", "望远镜里可以看到土星的光环和许多卫星", "今日は台所でパンを焼きました"],
    ["ภาษาไทยเขียนโดยไม่เว้นวรรคระหว่างคำ", "ฉันชอบกินข้าวผัดกับไข่ดาวตอนเช้า", "แมวนอนหลับอยู่บนโซฟาสีแดง"],
])
def test_text_without_spaces_between_words_is_named_as_the_cause(text):
    with pytest.raises(ValueError, match=r"because the tokens are whole phrases \([^)]*characters, e\.g\. '.+'\): "
                                         r"the text has no spaces between words"):
        loose().set_params(min_df=2).fit(text)


def test_unsegmented_text_is_told_from_ordinary_words():
    from topicvae.text.vectorizer import unsegmented_text

    assert unsegmented_text(["internationalization", "apple", "pear", "counterrevolutionary", "fig"]) is None
    assert unsegmented_text(["望远镜", "土星", "光环", "卫星", "蛋糕"]) is None  # segmented Chinese: short words
    assert unsegmented_text(["望远镜里可以看到", "今日は台所で", "土星"]) is not None  # clauses
    assert unsegmented_text(["x" * 14, "y" * 13, "z"]) is not None  # any script: whole phrases
    assert unsegmented_text([]) is None


def test_min_df_above_the_number_of_documents():
    with pytest.raises(ValueError, match="min_df=5 .* only 3; lower min_df"):
        TextVectorizer().fit(["apple banana", "cherry durian", "elderberry fig"])
    docs = [f"apple word{chr(97 + i)}" for i in range(6)]
    with pytest.raises(ValueError, match=r"max_df=0.5 allows words in at most 3 of the 6.*\(5\)"):
        TextVectorizer().fit(docs)


def test_transform_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        TextVectorizer().transform(["apple"])


def test_config_round_trip_gives_identical_transform(tmp_path):
    docs = TINY * 3 + ["Elderberry fig fig grape", "grape"]
    vectorizer = TextVectorizer(min_df=2, max_df=0.9, stop_words=["Apple", "fig"])
    expected = vectorizer.fit_transform(docs)
    config = vectorizer.to_config()
    assert config["stop_words"] == ["apple", "fig"]
    config = json.loads(json.dumps(config))  # must survive JSON
    vectorizer.save_vocabulary(tmp_path / "vocab.txt")
    words = load_vocabulary(tmp_path / "vocab.txt")
    assert words == vectorizer.vocabulary_
    restored = TextVectorizer.from_config(config, words)
    assert restored.get_params() == {**vectorizer.get_params(), "stop_words": ["apple", "fig"]}
    new_docs = ["grape banana cherry", "durian the elderberry grape"]
    assert (restored.transform(docs) != expected).nnz == 0
    assert (restored.transform(new_docs) != vectorizer.transform(new_docs)).nnz == 0


def test_config_of_defaults_names_the_english_list():
    config = TextVectorizer().to_config()
    assert config["stop_words"] == "english"
    restored = TextVectorizer.from_config(config, ["apple"])
    assert restored.get_params() == TextVectorizer().get_params()


def test_from_config_keeps_the_given_column_order():
    vectorizer = TextVectorizer.from_config({"lowercase": True}, ["zebra", "apple"])
    np.testing.assert_array_equal(
        vectorizer.transform(["apple zebra zebra"]).toarray(), [[2.0, 1.0]]
    )


def test_from_config_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown keys.*'colour'"):
        TextVectorizer.from_config({"colour": "red"}, ["apple"])
    with pytest.raises(ValueError, match="min_df=-2 is invalid"):
        TextVectorizer.from_config({"min_df": -2}, ["apple"])
    with pytest.raises(ValueError, match="'apple' twice"):
        TextVectorizer.from_config({}, ["apple", "apple"])
    with pytest.raises(ValueError, match="vocabulary is empty"):
        TextVectorizer.from_config({}, [])


def test_load_vocabulary_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_vocabulary(tmp_path / "missing.txt")
    path = tmp_path / "vocab.txt"
    path.write_text("apple\nbanana\napple\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'apple' twice"):
        load_vocabulary(path)


def test_strip_newsgroup_option_strips_before_counting():
    vectorizer = loose(strip_newsgroup=True).fit(POSTS[:2])
    assert "organization" not in vectorizer.vocabulary_  # header
    assert "weather" in vectorizer.vocabulary_
    assert "launch" not in vectorizer.vocabulary_  # only in the subject and quotes


def test_sklearn_clone_and_params():
    vectorizer = TextVectorizer(min_df=2, strip_newsgroup=True)
    copy = clone(vectorizer)
    assert copy.get_params() == vectorizer.get_params()
    assert "min_df=2" in repr(vectorizer)


SEGMENTED_CHINESE = ["今天 我们 在 厨房 里 用 面粉 烤 蛋糕", "望远镜 里 可以 看到 土星 的 光环"] * 3
# Hindi's vowel signs are marks, which \w does not match: its words fall apart into pieces under 3 letters
HINDI = ["मैं आज बाज़ार गया और सब्ज़ी ख़रीदी", "बच्चे बगीचे में खेल रहे हैं"] * 3


def test_a_token_pattern_that_misses_most_words_is_named():
    from topicvae.text.vectorizer import DegenerateCorpusWarning, words_missed_by_pattern

    letters_only = r"(?u)\b[^\W\d_]{3,}\b"  # the default before it kept marks and short CJK words
    missed, examples = words_missed_by_pattern(HINDI, letters_only)
    assert missed > 0.6 and len(examples) == 5
    # the default keeps the vowel signs inside Hindi words and CJK words of any length
    assert words_missed_by_pattern(HINDI, DEFAULT_TOKEN_PATTERN)[0] < 0.2  # only the 2-letter words
    assert words_missed_by_pattern(SEGMENTED_CHINESE, DEFAULT_TOKEN_PATTERN)[0] == 0
    english = ["The cat sat on the mat and it was a fine day for it", "He is in it to win it"]
    assert words_missed_by_pattern(english, DEFAULT_TOKEN_PATTERN)[0] < 0.6  # short English words are no sign
    # a pattern of 3 or more letters: one Chinese word survives; a warning, with the remedy
    with pytest.warns(DegenerateCorpusWarning, match=r"finds no word in 9\d% of the space-separated words \(e\.g\. '今天', .*min_word_length=1"):
        assert loose(stop_words=None, token_pattern=letters_only).fit(SEGMENTED_CHINESE).vocabulary_ == ["望远镜"]
    # nothing survives: the error names the same cause instead of stop words
    with pytest.raises(ValueError, match=r"^no word to count in the 6 documents: token_pattern=.* finds no word in 100%"):
        loose(stop_words=None, token_pattern=letters_only).fit(HINDI)
    assert loose(stop_words=None, token_pattern=r"\S+").fit(HINDI).vocabulary_[:2] == ["आज", "और"]  # the remedy works
    assert "बाज़ार" in loose(stop_words=None).fit(HINDI).vocabulary_  # and the default keeps whole words


def test_a_token_pattern_matching_the_empty_string_is_refused():
    with pytest.raises(ValueError, match=r"token_pattern='' matches the empty string"):
        loose().set_params(token_pattern="").fit(["apple pear"])
