"""Scaling out: streaming a corpus larger than memory, and data-parallel training with torchrun.

``streaming``: the stripped 20 Newsgroups training set written R times over into one text file
(R = 20 gives 226,280 documents), then, in a fresh process each, (a) streamed: the vocabulary
and the sharded bag-of-words built in one pass (``topicvae.text.shards``) and one training epoch
read from the shards, and (b) in memory: ``read_corpus`` + ``TextVectorizer`` + one epoch, the
path ``topicvae fit`` takes without ``--stream``. Each process's peak RSS comes from os.wait4.

``data_parallel``: ``topicvae fit`` on the stripped training set in one process and under
``torchrun --nproc_per_node 2`` (gloo), for several seeds; every saved model is scored by the
same NPMI code as the quality section.

    python benchmarks/scale.py child-stream CORPUS WORK     # one measurement, JSON on stdout
    python benchmarks/scale.py child-memory CORPUS
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO_ROOT, Mode, newsgroups_bow, newsgroups_texts, peak_rss_of, random_subset, say, topicvae_command  # noqa: E402

#: The training options of both streaming measurements: the fit command's defaults.
STREAM_TRAINING = dict(model="prodlda", groups="2x25", batch_size=200, epochs=1, seed=0)


# ------------------------------------------------------------------------------------------
# streaming
# ------------------------------------------------------------------------------------------
def _child_stream(corpus: str, work: str) -> dict:
    """Count the corpus in one streaming pass into shards, then train one epoch from them."""
    from topicvae import TopicModel
    from topicvae.text.shards import build_bag_of_words
    from topicvae.text.corpus import CorpusStream

    started = time.perf_counter()
    bag = build_bag_of_words(CorpusStream(corpus), Path(work) / "bag-of-words")
    counted = time.perf_counter()
    TopicModel(**STREAM_TRAINING).fit(bag)
    trained = time.perf_counter()
    shard_bytes = sum((Path(work) / "bag-of-words" / s["file"]).stat().st_size for s in bag.shards)
    return {
        "documents": bag.n_documents + bag.n_empty_documents,
        "documents_with_words": bag.n_documents,
        "vocabulary": len(bag.vocabulary),
        "shards": len(bag.shards),
        "shard_mib": round(shard_bytes / 2**20, 1),
        "count_seconds": round(counted - started, 2),
        "epoch_seconds": round(trained - counted, 2),
    }


def _child_memory(corpus: str) -> dict:
    """The in-memory path: every document read, vectorized at once, then one epoch."""
    from topicvae import TopicModel
    from topicvae.text.corpus import read_corpus
    from topicvae.text.vectorizer import TextVectorizer

    started = time.perf_counter()
    documents = read_corpus(corpus)
    counts = TextVectorizer().fit_transform(documents)
    counted = time.perf_counter()
    model = TopicModel(**STREAM_TRAINING)
    model.fit(counts, vocabulary=[f"w{i}" for i in range(counts.shape[1])])
    trained = time.perf_counter()
    return {
        "documents": len(documents),
        "documents_with_words": model.n_documents_,
        "vocabulary": counts.shape[1],
        "count_seconds": round(counted - started, 2),
        "epoch_seconds": round(trained - counted, 2),
    }


def _repeated_corpus(texts, repeats: int, path: Path) -> int:
    """The posts written ``repeats`` times over, one per line."""
    from topicvae.text.corpus import write_corpus_lines

    return write_corpus_lines((text for _ in range(repeats) for text in texts), path)


def _measure(command: list[str]) -> dict:
    run = peak_rss_of(command)
    if run["returncode"] != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{run['output'][-3000:]}")
    result = json.loads(run["output"].strip().splitlines()[-1])
    result.update(wall_seconds=run["seconds"], peak_rss_mib=run["peak_rss_mib"])
    total = result["count_seconds"] + result["epoch_seconds"]
    result.update(
        count_documents_per_second=round(result["documents"] / result["count_seconds"]),
        epoch_documents_per_second=round(result["documents_with_words"] / result["epoch_seconds"]),
        documents_per_second=round(result["documents"] / total),
    )
    return result


def streaming(mode: Mode, data: Path) -> tuple[dict, dict]:
    texts = newsgroups_texts(data, "train")
    chosen = [texts[i] for i in random_subset(len(texts), mode.stream_documents)]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for repeats in sorted(set(mode.stream_repeats) | set(mode.in_memory_repeats)):
            corpus = Path(work) / f"train-x{repeats}.txt"
            documents = _repeated_corpus(chosen, repeats, corpus)
            size_mib = round(corpus.stat().st_size / 2**20, 1)
            if repeats in mode.stream_repeats:
                say(f"streaming: {documents} documents ({size_mib} MiB), streamed")
                shards = Path(work) / "shards"
                shards.mkdir()
                row = _measure([sys.executable, __file__, "child-stream", str(corpus), str(shards)])
                shutil.rmtree(shards)
                rows.append({"path": "streamed", "repeats": repeats, "corpus_mib": size_mib, **row})
                say(f"streaming: peak RSS {row['peak_rss_mib']} MiB, {row['documents_per_second']} documents/s")
            if repeats in mode.in_memory_repeats:
                say(f"streaming: {documents} documents ({size_mib} MiB), in memory")
                row = _measure([sys.executable, __file__, "child-memory", str(corpus)])
                rows.append({"path": "in memory", "repeats": repeats, "corpus_mib": size_mib, **row})
                say(f"streaming: peak RSS {row['peak_rss_mib']} MiB, {row['documents_per_second']} documents/s")
            corpus.unlink()
    settings = {
        "corpus": f"20 Newsgroups bydate train, stripped ({len(chosen)} posts), written R times over into one "
                  "text file, one post per line",
        "streamed": "topicvae.text.shards.build_bag_of_words(CorpusStream(file)) with TextVectorizer's defaults, "
                    "8,192 documents per shard, then TopicModel().fit(bag) for one epoch from the shards",
        "in_memory": "read_corpus + TextVectorizer().fit_transform + TopicModel().fit(counts) for one epoch",
        "training": STREAM_TRAINING,
        "peak_rss": "ru_maxrss of each measurement's own process (os.wait4); it includes importing torch",
        "documents_per_second": "documents read / (counting + one epoch)",
        "target": "streamed, R = 20 (about 226,000 documents): peak RSS under 2 GB",
    }
    return settings, {"rows": rows}


# ------------------------------------------------------------------------------------------
# data_parallel
# ------------------------------------------------------------------------------------------
def _torchrun_command(arguments: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "topicvae", *arguments]


def _scored_fit(command: list[str], model_dir: Path, bow, tokens) -> dict:
    from quality import TOP_WORDS, score_topics

    from topicvae import TopicModel

    environment = {**os.environ, "OMP_NUM_THREADS": "1"} if "torch.distributed.run" in command else None
    started = time.perf_counter()
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=environment)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{(run.stdout + run.stderr)[-3000:]}")
    model = TopicModel.load(model_dir)
    words = model.topics(25)["words"].tolist()
    scores = score_topics(words, bow.train_counts, tokens, bow.vocabulary, "20 Newsgroups bydate train (stripped)")
    facts = json.loads((model_dir / "run.json").read_text())
    report = json.loads((model_dir / "report.json").read_text())
    return {
        "wall_seconds": round(seconds, 1),
        "seconds_per_epoch": round(facts["seconds_per_epoch"], 3),
        "npmi_document": scores["npmi_document"],
        "npmi_window": scores["npmi_window"],
        "diversity": scores["diversity"],
        "active_topics": len(report["information"]["active_topics"]),
        "topics_sample": [" ".join(w[:TOP_WORDS]) for w in words[:3]],
    }


def data_parallel(mode: Mode, data: Path) -> tuple[dict, dict]:
    texts = newsgroups_texts(data, "train")
    chosen = [texts[i] for i in random_subset(len(texts), mode.parallel_documents)]
    bow = newsgroups_bow(data, mode.parallel_documents, mode.quality_test_documents)
    tokens = bow.vectorizer.tokenize(bow.train_texts)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        corpus = Path(work) / "train.txt"
        _repeated_corpus(chosen, 1, corpus)
        for seed in mode.parallel_seeds:
            for name, launcher in (("one process", topicvae_command), ("torchrun, 2 processes", _torchrun_command)):
                out = Path(work) / f"model-{seed}-{len(rows)}"
                arguments = ["fit", str(corpus), "--epochs", str(mode.parallel_epochs), "--seed", str(seed),
                             "--no-progress", "--out", str(out)]
                say(f"data_parallel: {name}, seed {seed}")
                row = _scored_fit(launcher(arguments), out, bow, tokens)
                rows.append({"launch": name, "seed": seed, **row})
                say(f"data_parallel: NPMI {row['npmi_document']}, {row['seconds_per_epoch']} s per epoch")
    summary = {}
    for name in ("one process", "torchrun, 2 processes"):
        values = [row["npmi_document"] for row in rows if row["launch"] == name]
        summary[name] = {
            "npmi_document_mean": round(statistics.mean(values), 4),
            "npmi_document_sd": round(statistics.stdev(values), 4) if len(values) > 1 else None,
            "seconds_per_epoch_mean": round(statistics.mean(r["seconds_per_epoch"] for r in rows if r["launch"] == name), 3),
        }
    settings = {
        "corpus": f"20 Newsgroups bydate train, stripped ({len(chosen)} posts), one per line; TextVectorizer defaults",
        "commands": "topicvae fit train.txt --epochs E --seed S --no-progress --out DIR, and the same under "
                    "torchrun --nproc_per_node 2 -m topicvae (gloo, OMP_NUM_THREADS=1 per process; each process "
                    "streams its share of the posts into shards): ProdLDA, HFVAE 2x25, batch 200 (100 per process)",
        "scoring": "the saved model's top words, scored by benchmarks/quality.py's score_topics on the stripped "
                   "training set (whole-document NPMI and gensim c_npmi, window 10)",
        "epochs": mode.parallel_epochs,
        "seeds": list(mode.parallel_seeds),
    }
    return settings, {"rows": rows, "summary": summary}


if __name__ == "__main__":
    if sys.argv[1] == "child-stream":
        print(json.dumps(_child_stream(sys.argv[2], sys.argv[3])))
    elif sys.argv[1] == "child-memory":
        print(json.dumps(_child_memory(sys.argv[2])))
    else:
        raise SystemExit(f"unknown command {sys.argv[1]!r}: use child-stream or child-memory")
