"""Any language: the default token pattern keeps letters of every script with their vowel signs and
diacritics, CJK words of any length, accented words whole in either Unicode form, Turkish's dotted I;
``min_word_length`` and the CLI's options."""

from __future__ import annotations

import re
import unicodedata
import warnings

import pytest
from typer.testing import CliRunner

from topicvae import DegenerateCorpusWarning, TopicModel
from topicvae.cli import app
from topicvae.text.vectorizer import DEFAULT_TOKEN_PATTERN, TextVectorizer, word_pattern

# segmented Chinese (words split by spaces, as jieba writes them): most words have 2 characters,
# some 1 (了, 的) or 3 (望远镜); two themes, cooking and astronomy
CHINESE = [
    "妈妈 在 厨房 里 用 面粉 和 黄油 烤 了 一个 蛋糕",
    "我们 用 锅 炒 洋葱 和 大蒜 做 晚饭",
    "晚饭 以后 妈妈 烤 了 面包 和 蛋糕",
    "厨房 里 的 黄油 和 面粉 都 用 完 了",
    "火箭 把 卫星 送 进 轨道",
    "望远镜 看到 了 土星 的 光环",
    "卫星 在 轨道 上 看到 土星 和 月亮",
    "火箭 发射 以后 卫星 进入 轨道",
] * 3

# French and German with accents and sharp s; the same words appear decomposed (NFD)
EUROPEAN = [
    "Le café était très fort, la crème brûlée délicieuse",
    "Au café on a mangé une crème brûlée et un gâteau",
    "Die Straße in Zürich führt zum Bahnhof über die Brücke",
    "Über die Brücke und die Straße geht man nach Zürich",
    "Les élèves préfèrent le café et le gâteau",
    "Die Brücke über den Fluss in Zürich ist schön",
] * 3


def test_the_default_pattern_keeps_chinese_words_of_any_length_and_latin_words_of_three_letters():
    tokens = re.findall(DEFAULT_TOKEN_PATTERN, "望远镜 看到 了 土星 the tv set 42 año niño 한국어 말 にほん")
    assert tokens == ["望远镜", "看到", "了", "土星", "the", "set", "año", "niño", "한국어", "말", "にほん"]


def test_a_segmented_chinese_corpus_gives_its_words_and_topics():
    vectorizer = TextVectorizer(min_df=2, max_df=1.0, stop_words=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateCorpusWarning)  # nothing degenerate about it
        vectorizer.fit(CHINESE)
    assert {"蛋糕", "厨房", "了", "望远镜", "轨道", "卫星"} <= set(vectorizer.vocabulary_)
    assert max(map(len, vectorizer.vocabulary_)) <= 3
    model = TopicModel(groups="2", epochs=30, batch_size=8, vectorizer=TextVectorizer(min_df=2, max_df=1.0, stop_words=None), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateCorpusWarning)
        model.fit(CHINESE)
    assert len(model.topics(5)) == 2


def test_an_accented_european_corpus_keeps_its_words_whole_in_either_unicode_form():
    decomposed = [unicodedata.normalize("NFD", doc) for doc in EUROPEAN]
    assert decomposed[0] != EUROPEAN[0]
    vectorizer = TextVectorizer(min_df=2, max_df=1.0, stop_words=None)
    counts = vectorizer.fit_transform(EUROPEAN + decomposed)
    vocabulary = vectorizer.vocabulary_
    assert {"café", "crème", "brûlée", "straße", "zürich", "über", "brücke", "élèves", "gâteau"} <= set(vocabulary)
    assert not {"caf", "cre", "bru", "zu", "lee"} & set(vocabulary)  # no word cut at an accent
    half = len(EUROPEAN)
    assert (counts[:half] != counts[half:]).nnz == 0  # NFC and NFD texts count alike
    # transform and the streaming analyzer see the same words
    assert (vectorizer.transform(decomposed) != counts[half:]).nnz == 0
    analyze = vectorizer.build_analyzer()
    assert analyze(decomposed[2])[:3] == ["die", "straße", "zürich"]


def test_min_word_length_sets_the_shortest_word_of_alphabetic_scripts():
    vectorizer = TextVectorizer(min_df=1, max_df=1.0, stop_words=None, min_word_length=2)
    vectorizer.fit(["tv ai and a x 望远镜 了 हिन्दी"])
    assert vectorizer.vocabulary_ == sorted(["tv", "ai", "and", "望远镜", "了", "हिन्दी"])  # CJK words at any length
    single = TextVectorizer(min_df=1, max_df=1.0, stop_words=None, min_word_length=1).fit(["tv a x"])
    assert single.vocabulary_ == ["a", "tv", "x"]
    assert vectorizer.effective_token_pattern == word_pattern(2)
    assert TextVectorizer.from_config(vectorizer.to_config(), vectorizer.vocabulary_).effective_token_pattern == word_pattern(2)
    with pytest.raises(ValueError, match=r"min_word_length=0 is invalid: pass a whole number >= 1"):
        TextVectorizer(min_word_length=0).fit(["some words here"])
    with pytest.raises(ValueError, match="both say what a word is: give one of them"):
        TextVectorizer(min_word_length=2, token_pattern=r"(?u)\b\w+\b").fit(["some words here"])


def test_the_cli_takes_the_shortest_word_and_stop_words_none(tmp_path):
    corpus = tmp_path / "short.txt"
    corpus.write_text("\n".join(["tv ai news today", "ai tv show tonight", "tv news ai model", "ai model news tv"] * 4) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "fit", str(corpus), "--groups", "2", "--epochs", "2", "--min-df", "1", "--max-df", "1.0",
        "--min-word-length", "2", "--stop-words", "none", "--no-progress", "--out", str(out), "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    vocabulary = (out / "vocabulary.txt").read_text(encoding="utf-8").split()
    assert {"tv", "ai"} <= set(vocabulary)
    assert TopicModel.load(out).vectorizer_.min_word_length == 2


def test_unsegmented_text_names_the_cause_and_a_remedy_that_works(tmp_path):
    unsegmented = ["".join(doc.split()) for doc in CHINESE[:8]]  # each sentence once
    with pytest.raises(ValueError, match="no spaces between words .* jieba for Chinese"):
        TextVectorizer(min_df=2).fit(unsegmented)
    # the remedy: the segmented text, with the default pattern, fits (the previous test)
    assert TextVectorizer(min_df=2, max_df=1.0, stop_words=None).fit(CHINESE).vocabulary_


def test_marks_digits_and_the_turkish_capital_i_stay_inside_words():
    vectorizer = TextVectorizer(min_df=1, max_df=1.0, stop_words=None)
    vectorizer.fit(["मैं बाज़ार गया", "كِتَابٌ جميل", "2023年3月5日 做了3个菜", "İstanbul İzmir İnsan"])
    words = set(vectorizer.vocabulary_)
    assert {"मैं", "बाज़ार", "गया", "كِتَابٌ", "جميل", "年", "月", "做了", "istanbul", "izmir", "insan"} <= words
    assert not {"stanbul", "zmir", "nsan"} & words


def test_a_stop_words_file_in_decomposed_form_still_stops_the_words(tmp_path):
    stop_file = tmp_path / "stop.txt"
    stop_file.write_text(unicodedata.normalize("NFD", "très\nécrivain\n"), encoding="utf-8")
    corpus = tmp_path / "fr.txt"
    corpus.write_text("\n".join(["un écrivain très connu écrit", "le très bon écrivain lit"] * 3) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["fit", str(corpus), "--groups", "2", "--epochs", "1", "--min-df", "1", "--max-df", "1.0",
                                      "--stop-words", str(stop_file), "--no-progress", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    vocabulary = set((out / "vocabulary.txt").read_text(encoding="utf-8").split())
    assert not {"très", "écrivain"} & vocabulary and {"connu", "écrit"} <= vocabulary
