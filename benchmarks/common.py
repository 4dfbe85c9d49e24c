"""What every benchmark section shares: run modes, machine facts, data, timing and result files.

The sections (``speed.py``, ``resources.py``, ``quality.py``) import from here; ``run.py`` is the
command line. Nothing here re-implements topicvae: models, batches, the objective, vectorizing
and metrics all come from the package, so the benchmarks measure what a user runs.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DOC_PATH = REPO_ROOT / "docs" / "benchmarks.md"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
SECTIONS = (
    "throughput", "speedup", "growth", "memory", "vectorizer", "machine_limit", "objective", "quality", "prodlda_paper",
    "streaming", "data_parallel",
)


class MissingData(Exception):
    """A section's input data is absent: the section is skipped with this message."""


def say(message: str) -> None:
    """Progress on stderr, flushed at once (a section can run for many minutes)."""
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# Run modes
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mode:
    """Every size and count a run uses; ``full`` is the issue's setting.

    ``None`` for a document count means the whole split.
    """

    name: str
    # training-speed sections (throughput, growth, machine_limit)
    speed_documents: int | None
    warmup_epochs: int
    timed_epochs: int
    throughput_batches: tuple[int, ...]
    growth_corpus_factors: tuple[int, ...]
    growth_vocabularies: tuple[int, ...]
    growth_topics: tuple[int, ...]
    growth_batches: tuple[int, ...]
    matmul_sizes: tuple[int, ...]
    limit_batches: tuple[int, ...]
    # memory
    memory_fit_documents: int | None
    memory_fit_epochs: int
    objective_batch: int
    # vectorizer
    vectorizer_documents: int | None
    vectorizer_repeats: int
    # quality sections
    quality_train_documents: int | None
    quality_test_documents: int | None
    quality_epochs: int
    gensim_passes: int
    sklearn_iterations: int
    paper_topics: tuple[int, ...]
    paper_epochs: int
    # scale (benchmarks/scale.py): the training set repeated this many times, streamed and in memory
    stream_repeats: tuple[int, ...]
    in_memory_repeats: tuple[int, ...]
    stream_documents: int | None  # of the training set, before repeating
    # data-parallel fits against single-process ones
    parallel_documents: int | None
    parallel_epochs: int
    parallel_seeds: tuple[int, ...]
    # the objective against a naive implementation (benchmarks/objective_speed.py)
    objective_batches: tuple[int, ...] = (200, 512, 1024, 2048, 4096)
    note: str = ""
    #: where the speed sections run: "cpu", or "cuda" (``run.py --device``)
    device: str = "cpu"


MODES: dict[str, Mode] = {
    "full": Mode(
        name="full",
        speed_documents=None, warmup_epochs=1, timed_epochs=3,
        throughput_batches=(200, 512, 1024, 4096),
        growth_corpus_factors=(1, 2, 4), growth_vocabularies=(2000, 10000, 50000), growth_topics=(50, 200),
        growth_batches=(200, 512, 1024, 4096),
        matmul_sizes=(256, 512, 1024, 2048), limit_batches=(1024, 4096),
        memory_fit_documents=None, memory_fit_epochs=5, objective_batch=4096,
        vectorizer_documents=None, vectorizer_repeats=3,
        quality_train_documents=None, quality_test_documents=None, quality_epochs=100,
        gensim_passes=20, sklearn_iterations=20,
        paper_topics=(50, 200), paper_epochs=100,
        stream_repeats=(1, 5, 20), in_memory_repeats=(1, 5), stream_documents=None,
        parallel_documents=None, parallel_epochs=100, parallel_seeds=(0, 1, 2),
        note="the issue's settings",
    ),
    "quick": Mode(
        name="quick",
        speed_documents=4000, warmup_epochs=1, timed_epochs=2,
        throughput_batches=(200, 1024),
        growth_corpus_factors=(1, 2, 4), growth_vocabularies=(2000, 10000), growth_topics=(50, 200),
        growth_batches=(200, 1024),
        matmul_sizes=(512, 1024), limit_batches=(1024,),
        memory_fit_documents=2000, memory_fit_epochs=1, objective_batch=2048,
        vectorizer_documents=None, vectorizer_repeats=1,
        quality_train_documents=4000, quality_test_documents=2000, quality_epochs=10,
        gensim_passes=2, sklearn_iterations=3,
        paper_topics=(50, 200), paper_epochs=10,
        stream_repeats=(1, 2), in_memory_repeats=(1,), stream_documents=None,
        parallel_documents=4000, parallel_epochs=10, parallel_seeds=(0, 1),
        objective_batches=(200, 1024),
        note="fewer epochs, iterations, batch sizes and sizes, and subsets (4,000 training documents, 2,000 test "
             "documents): indicative only",
    ),
    "smoke": Mode(
        name="smoke",
        speed_documents=400, warmup_epochs=1, timed_epochs=1,
        throughput_batches=(64, 128),
        growth_corpus_factors=(1, 2), growth_vocabularies=(300, 1000), growth_topics=(10, 20),
        growth_batches=(64, 128),
        matmul_sizes=(128, 256), limit_batches=(128,),
        memory_fit_documents=300, memory_fit_epochs=1, objective_batch=256,
        vectorizer_documents=1000, vectorizer_repeats=1,
        quality_train_documents=600, quality_test_documents=300, quality_epochs=1,
        gensim_passes=1, sklearn_iterations=1,
        paper_topics=(10, 20), paper_epochs=1,
        stream_repeats=(1, 2), in_memory_repeats=(1,), stream_documents=500,
        parallel_documents=600, parallel_epochs=1, parallel_seeds=(0,),
        objective_batches=(64, 128),
        note="tiny sizes and one epoch to exercise the code paths: these numbers measure nothing",
    ),
}


# ------------------------------------------------------------------------------------------
# Machine and result files
# ------------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's "model name" from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_details() -> dict:
    """The CPU's family, model, clock and widest vector instructions from /proc/cpuinfo (Linux; else {}).

    Virtual machines often name the CPU only by its brand ("AMD EPYC"), and two machines of
    that name have differed by 2x in these benchmarks (a Zen 1 core at 2.0 GHz among them).
    """
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("cpu family", "model", "cpu MHz", "flags") and key not in fields:
                fields[key] = value.strip()
            if not line.strip() and fields:
                break  # the first processor's block
    except OSError:
        return {}
    flags = set(fields.pop("flags", "").split())
    vectors = [name for name in ("avx512f", "avx2", "fma", "avx", "sse4_2") if name in flags]
    return {"cpu_family": fields.get("cpu family"), "cpu_model_number": fields.get("model"),
            "cpu_mhz": fields.get("cpu MHz"), "vector_instructions": vectors}


def git_commit() -> str | None:
    """The short commit, with "-dirty" when the working tree has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info(device: str = "cpu") -> dict:
    """What a reader needs to compare two recorded runs."""
    import gensim
    import sklearn

    import topicvae

    return {
        "cpu": cpu_model(),
        **cpu_details(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "gensim": gensim.__version__,
        "topicvae": topicvae.__version__,
        **({"gpu": torch.cuda.get_device_name(torch.device(device)), "cuda": torch.version.cuda} if device.startswith("cuda") else {}),
    }


def result_path(section: str, mode: str, device: str = "cpu") -> Path:
    """One file per (section, device, mode), so a quick run never overwrites a full one, nor a GPU run a CPU one."""
    kind = device.split(":")[0]
    return RESULTS_DIR / (f"{section}-{mode}.json" if kind == "cpu" else f"{section}.{kind}-{mode}.json")


def write_result(section: str, mode: Mode, settings: dict, payload: dict, seconds: float) -> Path:
    """Write a section's measurements with the facts that make them reproducible."""
    record = {
        "section": section,
        "mode": mode.name,
        "device": mode.device,
        "mode_note": mode.note,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(mode.device),
        "commit": git_commit(),
        "section_seconds": round(seconds, 1),
        "settings": settings,
        **payload,
    }
    path = result_path(section, mode.name, mode.device)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------
NEWSGROUPS_FILES = ("20news-bydate-train.jsonl.gz", "20news-bydate-test.jsonl.gz")
PRODLDA_FILES = ("vocab.pkl", "test.txt", "derived_test_labels.tsv")


def _data_folder(data: Path, name: str, files: Sequence[str], what: str) -> Path:
    """``DATA/name`` holding every one of ``files``, or MissingData naming what is absent."""
    folder = Path(data) / name
    missing = [file for file in files if not (folder / file).is_file()]
    if missing:
        raise MissingData(f"{what} is missing: {', '.join(str(folder / m) for m in missing)} (pass --data)")
    return folder


def newsgroups_dir(data: Path) -> Path:
    """``DATA/20newsgroups`` with the two bydate splits."""
    return _data_folder(data, "20newsgroups", NEWSGROUPS_FILES, "20 Newsgroups")


def prodlda_dir(data: Path) -> Path:
    """``DATA/20news_prodlda`` with the ProdLDA paper's vocabulary and test set."""
    return _data_folder(data, "20news_prodlda", PRODLDA_FILES, "the ProdLDA test set")


def random_subset(n_items: int, size: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``size`` items drawn without replacement (all of them for None).

    The bydate posts are ordered by newsgroup, so the first ``size`` posts would all come from
    a few groups; a seeded random draw keeps every group.
    """
    if size is None or size >= n_items:
        return np.arange(n_items)
    return np.sort(np.random.default_rng(seed).choice(n_items, size=size, replace=False))


STRIPPED = ("headers", "footers", "quotes")


@functools.lru_cache(maxsize=None)
def newsgroups_posts(data: Path, split: str, remove: tuple[str, ...] = STRIPPED) -> tuple[str, ...]:
    """Every post of one bydate split in file order (``load_20newsgroups``), parts removed as asked."""
    from topicvae.text.newsgroups import load_20newsgroups

    return tuple(load_20newsgroups(split, source=newsgroups_dir(data), remove=remove).texts)


def newsgroups_texts(data: Path, split: str, remove: tuple[str, ...] = STRIPPED) -> tuple[str, ...]:
    """The posts as ``topicvae data 20newsgroups`` writes them: posts left without text are dropped."""
    return tuple(text for text in newsgroups_posts(data, split, remove) if text.split())


def newsgroups_ids(data: Path, split: str) -> list[str]:
    """The ``<newsgroup>/<file>`` id of every post, in the order ``load_20newsgroups`` returns them."""
    with gzip.open(newsgroups_dir(data) / f"20news-bydate-{split}.jsonl.gz", "rt", encoding="utf-8") as lines:
        return [json.loads(line)["id"] for line in lines if line.strip()]


@dataclass
class BagOfWords:
    """The 20 Newsgroups bag-of-words that every topicvae-side section trains on."""

    train_texts: list[str]
    test_texts: list[str]
    vectorizer: object  # a fitted topicvae.text.vectorizer.TextVectorizer
    train_counts: sp.csr_matrix  # rows with at least one vocabulary word
    test_counts: sp.csr_matrix
    vocabulary: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {
            "train_documents": self.train_counts.shape[0],
            "test_documents": self.test_counts.shape[0],
            "vocabulary": len(self.vocabulary),
            "train_tokens": int(self.train_counts.sum()),
        }


def _rows_with_words(counts: sp.csr_matrix) -> sp.csr_matrix:
    return counts[np.diff(counts.indptr) > 0]


@functools.lru_cache(maxsize=None)
def newsgroups_bow(data: Path, train_documents: int | None = None, test_documents: int | None = None, **vectorizer_options) -> BagOfWords:
    """Stripped bydate posts vectorized by ``TextVectorizer`` (its defaults unless overridden).

    The vocabulary is fitted on the (subset of the) training posts; documents without any
    vocabulary word are dropped from both count matrices, as ``TopicModel.fit`` drops them.
    """
    from topicvae.text.vectorizer import TextVectorizer

    train_all, test_all = newsgroups_texts(data, "train"), newsgroups_texts(data, "test")
    train = [train_all[i] for i in random_subset(len(train_all), train_documents)]
    test = [test_all[i] for i in random_subset(len(test_all), test_documents)]
    vectorizer = TextVectorizer(**vectorizer_options)
    train_counts = _rows_with_words(vectorizer.fit_transform(train))
    test_counts = _rows_with_words(vectorizer.transform(test))
    return BagOfWords(train, test, vectorizer, train_counts, test_counts, list(vectorizer.vocabulary_))


# ------------------------------------------------------------------------------------------
# Timing training
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingSetup:
    """One training configuration: model family, latent groups, objective and batch size."""

    model: str  # "prodlda" or "nvdm"
    groups: str  # e.g. "50" or "2x25"
    objective: str  # a TopicModel preset ("vae", "hfvae"), or CLOSED_FORM_ELBO
    batch_size: int

    def label(self) -> str:
        return f"{self.model} {self.objective} {self.groups} B={self.batch_size}"


#: Not a topicvae preset: the textbook ELBO with the KL in closed form and no batch estimate
#: of q(z). topicvae's "vae" preset has the same value but computes it through the HFVAE
#: estimator (the pairwise B x B term), so it cannot show what the decomposition costs.
CLOSED_FORM_ELBO = "elbo-closed-form"


def _topicvae_epoch_ends(setup: TrainingSetup, counts: sp.csr_matrix, epochs: int, seed: int, device: str) -> Iterator[None]:
    """Train through the public ``TopicModel.fit_iter``; yield at the end of every epoch.

    The model is set up for at least the estimator's default number of epochs, so that every
    choice that depends on the run's length (whether to compile the estimator's kernels) is
    the one a default fit makes; the caller stops after the epochs it times.
    """
    from topicvae import TopicModel

    planned = max(epochs, TopicModel().epochs)
    model = TopicModel(setup.model, setup.groups, objective=setup.objective, epochs=planned,
                       batch_size=setup.batch_size, seed=seed, device=device)
    for progress in model.fit_iter(counts):
        if progress.epoch_done:
            _synchronize(device)
            yield


def _closed_form_elbo_epoch_ends(setup: TrainingSetup, counts: sp.csr_matrix, epochs: int, seed: int, device: str) -> Iterator[None]:
    """The same model, batches and optimizer as ``fit_iter``, minimizing -(log p(x|z) - KL(q||p))."""
    from torch.distributions import kl_divergence

    from topicvae.latent.groups import GroupSpec
    from topicvae.topics.models import MODEL_DEFAULTS, build_model
    from topicvae.utils.random_state import RandomStreams
    from topicvae.training.batches import BagOfWordsBatches

    streams = RandomStreams(seed, cuda=device.startswith("cuda"))
    with streams.active():
        model = build_model(setup.model, counts.shape[1], GroupSpec.coerce(setup.groups)).to(device)
    batches = BagOfWordsBatches(counts, min(setup.batch_size, counts.shape[0]), device=device)
    defaults = MODEL_DEFAULTS[setup.model]
    optimizer = torch.optim.Adam(model.parameters(), lr=defaults["lr"], betas=defaults["adam_betas"])
    for _ in range(epochs):
        model.train()
        with streams.active():
            for batch in batches.epoch(streams.shuffle):
                out = model(batch)
                kl = sum(kl_divergence(q, p).sum(-1) for q, p in zip(out.posteriors, out.priors))
                loss = -(out.log_likelihood - kl).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        _synchronize(device)
        yield


def _synchronize(device: str) -> None:
    """Wait for a GPU's queued work, so that an epoch's time is its own."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def epoch_ends(setup: TrainingSetup, counts: sp.csr_matrix, epochs: int, seed: int = 0, device: str = "cpu") -> Iterator[None]:
    """An iterator that trains ``setup`` on ``counts`` on ``device`` and yields once per finished epoch."""
    if setup.objective == CLOSED_FORM_ELBO:
        return _closed_form_elbo_epoch_ends(setup, counts, epochs, seed, device)
    return _topicvae_epoch_ends(setup, counts, epochs, seed, device)


def time_epochs(setup: TrainingSetup, counts: sp.csr_matrix, mode: Mode, seed: int = 0) -> dict:
    """Seconds of every epoch; the steady state is the median after the warm-up epochs.

    The warm-up epoch holds one-off costs (densifying the corpus, building the model, the
    allocator and thread pool warming up) that a 100-epoch fit pays once.
    """
    counts = _rows_with_words(sp.csr_matrix(counts, dtype=np.float32))
    epochs = mode.warmup_epochs + mode.timed_epochs
    seconds = []
    last = time.perf_counter()
    for _ in epoch_ends(setup, counts, epochs, seed, mode.device):
        now = time.perf_counter()
        seconds.append(now - last)
        last = now
        if len(seconds) == epochs:
            break  # leaves fit_iter before its post-training analysis, which is not an epoch
    steady = seconds[mode.warmup_epochs:] or seconds
    median = statistics.median(steady)
    documents = int(counts.shape[0])
    return {
        **asdict(setup),
        "documents": documents,
        "vocabulary": int(counts.shape[1]),
        "epoch_seconds": [round(s, 4) for s in seconds],
        "warmup_epochs": mode.warmup_epochs,
        "seconds_per_epoch": round(median, 4),
        "documents_per_second": round(documents / median, 1),
    }


#: Profiler operators that are matrix products (wrappers such as aten::linear have no self time).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv")


def growth_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float | None:
    """Slope of log(seconds) against log(size): cost grows as size^slope (None below 2 points)."""
    if len(sizes) < 2:
        return None
    slope, _ = np.polyfit(np.log(np.asarray(sizes, dtype=float)), np.log(np.asarray(seconds, dtype=float)), 1)
    return round(float(slope), 3)


# ------------------------------------------------------------------------------------------
# Subprocesses
# ------------------------------------------------------------------------------------------
#: A minimal Python process that starts the measured command and reports its peak RSS. Linux
#: carries the RSS of the process that forks into the child's ru_maxrss, so a command started
#: straight from this (large) process would never report less than this process's size; started
#: from this launcher, whose RSS is about 12 MiB, it reports its own peak.
_LAUNCHER = (
    "import json, os, subprocess, sys\n"
    "with open(sys.argv[1], 'w') as output:\n"
    "    child = subprocess.Popen(sys.argv[2:], stdout=output, stderr=subprocess.STDOUT)\n"
    "    _, status, usage = os.wait4(child.pid, 0)\n"
    "print(json.dumps({'returncode': os.waitstatus_to_exitcode(status), 'max_rss_kib': usage.ru_maxrss}))\n"
)


def peak_rss_of(command: Sequence[str], *, cwd: Path = REPO_ROOT) -> dict:
    """Run ``command``; return its exit code, wall seconds, peak resident memory and output.

    The peak is ``ru_maxrss`` of that one process from ``os.wait4`` (``RUSAGE_CHILDREN`` would
    be the largest of every child ever waited for), taken in a small launcher process (see
    ``_LAUNCHER``). The output is stdout and stderr together.
    """
    with tempfile.TemporaryDirectory() as work:
        output = Path(work) / "output.txt"
        started = time.perf_counter()
        report = subprocess.run([sys.executable, "-c", _LAUNCHER, str(output), *command], cwd=cwd,
                                capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
        usage = json.loads(report.stdout)
        text = output.read_text(errors="replace")
    return {
        "returncode": usage["returncode"],
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(usage["max_rss_kib"] / 1024, 1),  # ru_maxrss is in KiB on Linux
        "output": text,
    }


def topicvae_command(arguments: Iterable[str]) -> list[str]:
    """``topicvae ARGS`` run with this interpreter, as ``python -m topicvae.cli``."""
    return [sys.executable, "-m", "topicvae.cli", *arguments]
