"""Memory of a whole ``topicvae fit`` and of the objective alone, and the text pipeline's speed."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import MissingData, Mode, newsgroups_texts, peak_rss_of, random_subset, say, topicvae_command

#: N in the stratified estimator for the objective-only measurement: the bydate training set.
NEWSGROUPS_TRAIN_SIZE = 11314


def memory(mode: Mode, data: Path) -> tuple[dict, dict]:
    """Peak RSS of ``topicvae fit`` on 20 Newsgroups (a subprocess), and of the objective alone."""
    import objective_memory  # benchmarks/objective_memory.py: one fresh process per path

    payload: dict = {"fit": None, "notes": []}
    try:
        payload["fit"] = _fit_memory(mode, data)
    except MissingData as missing:
        payload["notes"].append(f"topicvae fit not measured: {missing}")
        say(f"memory: {missing}")
    say(f"memory: the objective alone at B = {mode.objective_batch}, 50 dimensions (compiled, fused and generic paths)")
    payload["objective"] = objective_memory.measure_paths(mode.objective_batch, 50, max(mode.objective_batch, NEWSGROUPS_TRAIN_SIZE))
    settings = {
        "fit_command": "topicvae fit TRAIN.txt --epochs E --no-progress --out DIR (every other option at its default: "
                       "ProdLDA, HFVAE 2x25, batch 200, 2,000 words, MI analysis of the training set)",
        "fit_epochs": mode.memory_fit_epochs,
        "fit_documents": mode.memory_fit_documents or "all",
        "peak_rss": "ru_maxrss of the child process from os.wait4",
        "objective": f"benchmarks/objective_memory.py at B = {mode.objective_batch}, 50 dimensions as 2 groups of 25, "
                     f"N = {max(mode.objective_batch, NEWSGROUPS_TRAIN_SIZE)}, forward + backward, each path in a fresh process",
    }
    return settings, payload


def _fit_memory(mode: Mode, data: Path) -> dict:
    from topicvae.text.corpus import write_corpus_lines

    texts = newsgroups_texts(data, "train")
    chosen = [texts[i] for i in random_subset(len(texts), mode.memory_fit_documents)]
    with tempfile.TemporaryDirectory() as work:
        corpus = Path(work) / "train.txt"
        write_corpus_lines(chosen, corpus)
        # The interpreter, torch and topicvae alone: the floor under every figure below.
        say("memory: importing topicvae.cli alone")
        imports = peak_rss_of([sys.executable, "-c", "import topicvae.cli"])
        say(f"memory: topicvae fit on {len(chosen)} posts, {mode.memory_fit_epochs} epoch(s)")
        fit = peak_rss_of(topicvae_command(
            ["fit", str(corpus), "--epochs", str(mode.memory_fit_epochs), "--no-progress", "--out", str(Path(work) / "model")]
        ))
    if fit["returncode"] != 0:
        raise RuntimeError(f"topicvae fit failed:\n{fit['output'][-2000:]}")
    return {
        "documents": len(chosen),
        "epochs": mode.memory_fit_epochs,
        "seconds": fit["seconds"],
        "peak_rss_mib": fit["peak_rss_mib"],
        "imports_only_peak_rss_mib": imports["peak_rss_mib"],
        "summary_line": next((line for line in fit["output"].splitlines() if " epochs in " in line), None),
    }


# ------------------------------------------------------------------------------------------
# Vectorizing
# ------------------------------------------------------------------------------------------
def _vectorizer_contenders() -> dict[str, object]:
    """Name -> factory of a fitted-on-call vectorizer with ``fit_transform`` and ``transform``.

    scikit-learn's CountVectorizer is given topicvae's own options (from ``to_config``) and stop
    list, so the two must agree word for word; a second CountVectorizer keeps scikit-learn's
    stop list and token pattern, to show what those choices change.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    from topicvae.text.vectorizer import TextVectorizer, english_stop_words

    config = TextVectorizer().to_config()
    shared = {key: config[key] for key in ("min_df", "max_df", "max_features", "lowercase")}
    return {
        "topicvae TextVectorizer() (defaults)": lambda: TextVectorizer(),
        "scikit-learn CountVectorizer, topicvae's options and stop list": lambda: CountVectorizer(
            **shared, stop_words=sorted(english_stop_words()), token_pattern=config["token_pattern"], dtype=np.float32
        ),
        "scikit-learn CountVectorizer, its own stop list and token pattern": lambda: CountVectorizer(
            **shared, stop_words="english", dtype=np.float32
        ),
        "topicvae TextVectorizer(strip_newsgroup=True)": lambda: TextVectorizer(strip_newsgroup=True),
    }


def _vocabulary_of(vectorizer) -> list[str]:
    words = getattr(vectorizer, "vocabulary_", None)
    return list(words) if isinstance(words, list) else vectorizer.get_feature_names_out().tolist()


def vectorizer(mode: Mode, data: Path) -> tuple[dict, dict]:
    """Seconds and documents/s of turning the raw posts into counts, against CountVectorizer."""
    from topicvae.text.vectorizer import english_stop_words

    train_all = newsgroups_texts(data, "train", remove=())
    test_all = newsgroups_texts(data, "test", remove=())
    train = [train_all[i] for i in random_subset(len(train_all), mode.vectorizer_documents)]
    test = [test_all[i] for i in random_subset(len(test_all), mode.vectorizer_documents)]
    english_stop_words()  # imports gensim once (seconds); not a cost of vectorizing
    rows, reference = [], None
    for name, make in _vectorizer_contenders().items():
        say(f"vectorizer: {name}")
        fit_times, transform_times = [], []
        for _ in range(mode.vectorizer_repeats):
            vectorizer_ = make()
            started = time.perf_counter()
            train_counts = vectorizer_.fit_transform(train)
            fit_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            vectorizer_.transform(test)
            transform_times.append(time.perf_counter() - started)
        words = _vocabulary_of(vectorizer_)
        if reference is None:
            reference = (words, train_counts)
        fit_seconds, transform_seconds = statistics.median(fit_times), statistics.median(transform_times)
        rows.append({
            "vectorizer": name,
            "fit_transform_seconds": round(fit_seconds, 3),
            "fit_transform_documents_per_second": round(len(train) / fit_seconds, 1),
            "transform_seconds": round(transform_seconds, 3),
            "transform_documents_per_second": round(len(test) / transform_seconds, 1),
            "vocabulary": len(words),
            **_agreement(reference, words, train_counts),
        })
    settings = {
        "documents": {"train (fit_transform)": len(train), "test (transform)": len(test)},
        "input": "raw bydate posts with headers, quotes and signatures (nothing stripped beforehand)",
        "options": "min_df 5, max_df 0.5, max_features 2000, lowercase (TextVectorizer's defaults)",
        "repeats": mode.vectorizer_repeats,
        "statistic": "median over the repeats",
    }
    return settings, {"rows": rows}


def _agreement(reference: tuple[list[str], object], words: list[str], counts) -> dict:
    """How a vocabulary and count matrix compare with the first contender's."""
    reference_words, reference_counts = reference
    shared = set(words) & set(reference_words)
    same_vocabulary = words == reference_words
    return {
        "same_vocabulary_as_topicvae": same_vocabulary,
        "vocabulary_overlap": round(len(shared) / len(set(words) | set(reference_words)), 4),
        "same_counts_as_topicvae": bool(same_vocabulary and (abs(counts - reference_counts)).sum() == 0),
    }
