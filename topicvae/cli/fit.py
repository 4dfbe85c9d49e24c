"""``topicvae fit``: train a topic model on a corpus, save it, then print its topics and their
associations (results are saved before anything is printed)."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from topicvae.cli.app import (
    USER_ERRORS, DecodeErrors, DecodeErrorsOption, Encoding, Objective, TextColumn, app, check_creatable,
    echo, fail, interrupted, note_replaced_bytes, print_information, read_documents, run_with_progress, state,
)

from topicvae.cli.printing import CHECKPOINT_DIR, REPORT_FILE, RUN_FILE, print_pairs, print_topics, shown_pairs


class ModelKind(str, Enum):
    prodlda = "prodlda"
    nvdm = "nvdm"


class Precision(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"


def _run_facts(seconds: float | None, epochs_run: int, resumed_from: int, process_group=None) -> dict:
    """How this process trained: times and resumption differ from run to run, results do not."""
    return {
        "training_seconds": seconds,  # a resumed run times only the epochs this process trained
        "seconds_per_epoch": (seconds / epochs_run) if seconds and epochs_run else None,
        "epochs_trained": epochs_run,
        "resumed_from_epoch": resumed_from,
        "processes": 1 if process_group is None else process_group.world_size,
        "backend": None if process_group is None else process_group.backend,
    }


def _report(model, n_words: int, n_pairs: int, corpus: Path, information: dict) -> dict:
    import pandas as pd

    topics = model.topics(n_words)
    shown = shown_pairs(model, n_pairs, n_words)
    pairs = None if shown is None else pd.concat([frame for frame in shown if not frame.empty] or [shown[0]])
    correlations = model.analysis_.correlations
    return {
        "corpus": str(corpus.resolve()),
        "model": model.model,
        "groups": str(model.groups_),
        "weights": model.weights_.as_dict(),
        "n_documents": model.n_documents_,
        "n_empty_documents": model.n_empty_documents_,
        "vocabulary_size": len(model.vocabulary_),
        "topics": [
            {
                "label": label,
                "group": row["group"],
                "index": int(row["topic"]),
                "words": list(row["words"]),
                # a Concrete group's categories share one variable, reported under the group's name
                "mutual_information": information["per_topic"].get(label, information["per_topic"].get(row["group"])),
            }
            for label, row in topics.iterrows()
        ],
        "information": information,
        "correlations": {
            "topics": [model.topic_labels()[i] for i in correlations.topics.tolist()],
            "partial": correlations.partial.tolist(),
            "correlation": correlations.correlation.tolist(),
            "null_quantile": correlations.null_quantile.tolist(),
            "threshold": correlations.threshold,
            "level": correlations.level,
            "n_documents": correlations.n_documents,
        },
        "correlated_pairs": []
        if pairs is None
        else [
            {
                "topic_a": row.topic_a, "topic_b": row.topic_b, "partial": row.partial, "correlation": row.correlation,
                "null_quantile": row.null_quantile, "significant": row.significant, "kind": row.kind,
                "shared_words": row.shared_words,
            }
            for row in pairs.itertuples()
        ],
        "history": model.history_,
    }


def _write_json_atomically(payload: dict, path: Path) -> None:
    from topicvae.io.atomic import write_json_atomically

    write_json_atomically(path, payload)


# ------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------
@app.command()
def fit(
    corpus: Annotated[Path, typer.Argument(help="Documents: .txt (one per line), .txt.gz, a folder of .txt, .csv or .jsonl.")],
    groups: Annotated[str, typer.Option(help="Latent groups, e.g. 2x25, 25,25 or 10,10c.")] = "2x25",
    model: Annotated[ModelKind, typer.Option(help="Encoder/decoder family.")] = ModelKind.prodlda,
    objective: Annotated[Objective, typer.Option(help="Preset of the objective's weights.")] = Objective.hfvae,
    alpha: Annotated[Optional[float], typer.Option(help="Weight of I(x;z) (hfvae default 1).")] = None,
    beta: Annotated[Optional[float], typer.Option(help="Weight of the TC between groups (hfvae default 0.1).")] = None,
    gamma: Annotated[Optional[float], typer.Option(help="Weight of the TC within groups (hfvae default 4).")] = None,
    delta: Annotated[Optional[float], typer.Option(help="Weight of the dimension-wise KL (default 1).")] = None,
    gamma_warmup: Annotated[Optional[float], typer.Option(help="Share of training, in [0, 1), that weighs the TC within groups by 1 before --gamma takes over (default: 0.5 ProdLDA, 0 NVDM).")] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the corpus.")] = 100,
    batch_size: Annotated[Optional[int], typer.Option(help="Documents per step (also the sample that estimates q(z)) (default: 64 ProdLDA, 200 NVDM).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate (default 2e-3 ProdLDA, 5e-4 NVDM).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the run's own random numbers (initial weights, batch order, dropout, samples).")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Directory for the saved model, report.json (results) and run.json (timings).")] = None,
    min_df: Annotated[float, typer.Option(help="Keep words in at least this many documents (>= 1) or this fraction (< 1).")] = 5,
    max_df: Annotated[float, typer.Option(help="Drop words in more than this fraction (<= 1) or number (> 1) of documents.")] = 0.5,
    max_features: Annotated[int, typer.Option(help="Vocabulary size: the most frequent remaining words.")] = 2000,
    stop_words: Annotated[str, typer.Option(help="'english' (scikit-learn + gensim lists), 'none', or a file of words.")] = "english",
    token_pattern: Annotated[Optional[str], typer.Option(help="Regular expression of a word (default: 3 or more letters of any script, with their vowel signs and accents, and Chinese, Japanese or Korean words of any length); e.g. '\\S+' keeps any run of non-space characters.")] = None,
    min_word_length: Annotated[Optional[int], typer.Option(help="The shortest word kept, in letters, in alphabetic scripts (instead of --token-pattern), e.g. 2 for 'tv' or 'ai', 1 for single letters; Chinese, Japanese and Korean words are kept at any length.")] = None,
    strip_newsgroup: Annotated[bool, typer.Option(help="Strip newsgroup headers, quotes and signatures first.")] = False,
    text_column: TextColumn = "text",
    encoding: Encoding = "utf-8",
    decode_errors: DecodeErrorsOption = DecodeErrors.strict,
    top_words: Annotated[int, typer.Option(help="Words printed per topic.")] = 10,
    pairs: Annotated[int, typer.Option(help="Correlated topic pairs printed.")] = 10,
    mi_threshold: Annotated[Optional[float], typer.Option(help="Call topics with I(x; z_k) below this many nats pruned (default: the gap rule, docs/analysis.md).")] = None,
    mi_documents: Annotated[int, typer.Option(help="Training documents in the analysis of pruning and correlations (a random subset above this; the cost grows as its square).")] = 5000,
    device: Annotated[str, typer.Option(help="auto (a GPU when there is one), cpu or cuda.")] = "auto",
    precision: Annotated[Precision, typer.Option(help="The model's forward pass in bfloat16 mixed precision (auto: on GPUs that support it); the objective's pairwise densities stay float32.")] = Precision.auto,
    stream: Annotated[bool, typer.Option("--stream", help="Count the corpus in one streaming pass into a bag-of-words on disk and train from it in shards: memory does not grow with the corpus (always on under torchrun).")] = False,
    shard_dir: Annotated[Optional[Path], typer.Option(help="With --stream: keep the sharded bag-of-words here and reuse it on later runs (default: a temporary directory).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    checkpoint_every: Annotated[Optional[int], typer.Option(help=f"With --out DIR: checkpoint to DIR/{CHECKPOINT_DIR} every N epochs and after the last (default: 1).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help=f"Continue the run checkpointed in --out DIR/{CHECKPOINT_DIR}; the corpus and options must be the same.")] = False,
) -> None:
    """Fit a topic model and print the top words of every topic and the most correlated topics.

    With --out DIR, training is checkpointed to DIR/checkpoint (deleted once the model is saved);
    after a crash, a kill or Ctrl-C, the same command with --resume added continues from there.
    Started by torchrun with several processes, it trains data-parallel (docs/distributed.md):
    each process reads its share of the corpus, and rank 0 alone prints and writes.
    """
    checkpoint_dir = out / CHECKPOINT_DIR if out is not None else None
    temporary_shards = None
    try:
        from topicvae.training.distributed import launched_with_torchrun, start_process_group
        from topicvae.topics.estimator import ANALYSIS_DOCUMENTS, TopicModel
        from topicvae.training.distributed import resolve_device
        from topicvae.objective.information import check_mi_threshold, information_summary
        from topicvae.io.model_files import CHECKPOINT_FILE, CONFIG_FILE
        from topicvae.text.vectorizer import TextVectorizer, load_vocabulary

        process_group = None
        if launched_with_torchrun():
            process_group, _ = start_process_group(resolve_device(device))
            state["speaker"] = "" if process_group.is_main else f"rank {process_group.rank}: "
            progress = progress and process_group.is_main

        check_mi_threshold(mi_threshold)
        if mi_documents < 3:
            raise ValueError(f"--mi-documents {mi_documents} is invalid: give a whole number >= 3")
        if top_words < 1 or pairs < 0:
            option, value = ("--top-words", top_words) if top_words < 1 else ("--pairs", pairs)
            raise ValueError(f"{option} {value} is invalid: give a whole number >= {1 if option == '--top-words' else 0}")
        if out is not None:
            check_creatable(out, "--out")
        if out is None and (resume or checkpoint_every is not None):
            option = "--resume" if resume else "--checkpoint-every"
            raise ValueError(f"{option} needs --out DIR: checkpoints are kept in DIR/{CHECKPOINT_DIR}")
        if resume and out is not None and (out / CONFIG_FILE).is_file() and not (checkpoint_dir / CHECKPOINT_FILE).is_file():
            raise FileNotFoundError(
                f"--resume: the run in {out} finished and saved its model there, so there is nothing to resume; "
                f"read it with 'topicvae topics {out}', or fit without --resume to train again"
            )
        if stop_words == "none":
            stops: object = None
        elif stop_words == "english":
            stops = "english"
        elif not Path(stop_words).is_file():
            raise FileNotFoundError(
                f"--stop-words {stop_words} is no file: give 'english', 'none', or a file of stop words, one per line"
            )
        else:
            stops = load_vocabulary(stop_words)
        vectorizer = TextVectorizer(
            min_df=_count_or_fraction(min_df, low_is_fraction=True),
            max_df=_count_or_fraction(max_df, low_is_fraction=False),
            max_features=max_features,
            stop_words=stops,
            strip_newsgroup=strip_newsgroup,
            **({"token_pattern": token_pattern} if token_pattern is not None else {}),
            min_word_length=min_word_length,
        )
        if shard_dir is not None and not (stream or process_group):
            raise ValueError("--shard-dir needs --stream (or a torchrun launch): the bag-of-words is kept in memory otherwise")
        if stream or process_group is not None:
            if shard_dir is None:
                shard_dir = temporary_shards = Path(tempfile.mkdtemp(prefix="topicvae-bag-of-words-"))
            docs = _streamed_bag_of_words(
                corpus, shard_dir, vectorizer, process_group, seed=seed, text_column=text_column, encoding=encoding,
                decode_errors=decode_errors, progress=progress,
            )
        else:
            docs = read_documents(corpus, text_column=text_column, encoding=encoding, decode_errors=decode_errors)
        estimator = TopicModel(
            model.value,
            groups,
            objective=objective.value,
            alpha=alpha,
            beta=beta,
            gamma=gamma,
            delta=delta,
            gamma_warmup=gamma_warmup,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            vectorizer=vectorizer,
            seed=seed,
            device=device,
            precision=precision.value,
        )
        started = time.perf_counter()
        steps = estimator.fit_iter(
            docs, checkpoint_dir=checkpoint_dir, checkpoint_every=1 if checkpoint_every is None else checkpoint_every, resume=resume
        )
        epochs_run = run_with_progress(steps, enabled=progress)
        seconds = time.perf_counter() - started
        if process_group is not None and not process_group.is_main:
            return  # rank 0 analyses (on its share of the documents), prints and saves
        if mi_documents != ANALYSIS_DOCUMENTS or mi_threshold is not None:
            # fit analysed ANALYSIS_DOCUMENTS of them (drawn with the same seed) by the gap rule
            estimator.analysis_ = estimator.analyse(docs, max_documents=mi_documents, seed=seed, mi_threshold=mi_threshold)
        information = information_summary(estimator, estimator.analysis_.information, pruning=estimator.analysis_.pruning)
    except KeyboardInterrupt as error:
        interrupted(error, _checkpoint_note(checkpoint_dir, "the checkpoint of the last completed epoch", _RESUME_ADVICE))
        return
    except FloatingPointError as error:
        # resuming with the same options repeats the divergence on CPU, so offer both ways on
        fail(error, _checkpoint_note(
            checkpoint_dir, "the last good checkpoint",
            "delete it to start again with other options, or rerun with --resume to continue it unchanged",
        ))
        return
    except USER_ERRORS as error:
        fail(error)
        return
    finally:
        if temporary_shards is not None:
            shutil.rmtree(temporary_shards, ignore_errors=True)

    resumed_from = len(estimator.history_) - epochs_run
    if out is not None:
        # the results are on disk before a line is printed: a reader that stops reading
        # (| head) or a failing terminal cannot cost the model
        try:
            estimator.save(out)
            _write_json_atomically(_report(estimator, top_words, pairs, corpus, information), out / REPORT_FILE)
            _write_json_atomically(_run_facts(seconds, epochs_run, resumed_from, process_group), out / RUN_FILE)
        except KeyboardInterrupt as error:
            interrupted(error, _checkpoint_note(checkpoint_dir, "the checkpoint of the last completed epoch", _RESUME_ADVICE))
        except USER_ERRORS as error:
            fail(error, _checkpoint_note(checkpoint_dir, "the checkpoint of the last completed epoch", _RESUME_ADVICE))
        # the saved model supersedes the checkpoint, and a later fit into DIR must not find it
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    timing = f"{epochs_run} epochs in {seconds:.1f} s ({seconds / epochs_run:.2f} s per epoch)" if epochs_run else "nothing left to train"
    if process_group is not None:
        echo(
            f"data-parallel over {process_group.world_size} processes ({process_group.backend}); "
            f"information measured on rank 0's share of the documents"
        )
    echo(
        f"{estimator.model} with groups {estimator.groups_} on {estimator.n_documents_} documents "
        f"({estimator.n_empty_documents_} left empty by the vocabulary and skipped), {len(estimator.vocabulary_)} words; "
        f"{', '.join(f'{k}={v:g}' for k, v in estimator.weights_.as_dict().items())}; "
        + (f"resumed from epoch {resumed_from} of {estimator.epochs}, then {timing}" if resumed_from else timing)
    )
    print_topics(estimator, top_words, information)
    print_information(information, "training documents")
    print_pairs(estimator, pairs, top_words)
    if out is not None:
        echo(f"\nsaved the model, {REPORT_FILE} and {RUN_FILE} to {out}")


_RESUME_ADVICE = "rerun the same command with --resume to continue from it"


def _streamed_bag_of_words(corpus, shard_dir, vectorizer, process_group, *, seed, text_column, encoding, decode_errors, progress):
    """The corpus counted in one streaming pass into shard_dir (this rank's part), or the bag-of-words found there."""
    from topicvae.text.shards import MANIFEST_FILE, ShardedBagOfWords, build_bag_of_words, file_source
    from topicvae.text.corpus import CorpusStream

    rank, world_size = (0, 1) if process_group is None else (process_group.rank, process_group.world_size)
    directory = shard_dir / f"rank-{rank}-of-{world_size}"
    source = file_source(corpus)
    if (directory / MANIFEST_FILE).is_file():
        bag_of_words = ShardedBagOfWords(directory)
        if bag_of_words.source != source:
            raise ValueError(
                f"{directory} holds the bag-of-words of another corpus, or of an older version of it "
                f"({(bag_of_words.source or {}).get('path')}): pass another --shard-dir, or delete it to count {corpus} again"
            )
        if bag_of_words.vectorizer.to_config() != vectorizer.to_config():
            raise ValueError(
                f"{directory} holds a bag-of-words counted with other vocabulary options "
                f"({bag_of_words.vectorizer.to_config()}): pass another --shard-dir, or delete it"
            )
        return bag_of_words
    from tqdm import tqdm

    documents = CorpusStream(corpus, text_column=text_column, encoding=encoding, errors=decode_errors.value)
    with tqdm(desc="counting", unit=" documents", disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        bag_of_words = build_bag_of_words(
            documents, directory, vectorizer, seed=seed, process_group=process_group,
            progress=lambda read: bar.update(read - bar.n), source=source,
        )
    note_replaced_bytes(documents.undecodable_bytes, corpus)
    return bag_of_words


def _checkpoint_note(checkpoint_dir: Path | None, what: str, advice: str) -> str:
    """Where the run's checkpoint is, as the disk has it now, and what to do with it."""
    from topicvae.io.model_files import ModelFileError, read_checkpoint

    if checkpoint_dir is None:
        return "nothing was saved (with --out DIR, training is checkpointed and can be resumed)"
    try:
        checkpoint = read_checkpoint(checkpoint_dir)
    except FileNotFoundError:
        return f"no epoch was completed, so {checkpoint_dir} holds no checkpoint to resume"
    except ModelFileError as error:
        return str(error)
    return (
        f"{what} (epoch {checkpoint['epoch']} of {checkpoint['epochs']}) is kept in {checkpoint_dir}: {advice}"
    )


def _count_or_fraction(value: float, *, low_is_fraction: bool) -> int | float:
    """CLI numbers: whole numbers >= 1 are document counts, others fractions (as in scikit-learn)."""
    if value == int(value) and (value > 1 or (value == 1 and low_is_fraction)):
        return int(value)
    return float(value)
