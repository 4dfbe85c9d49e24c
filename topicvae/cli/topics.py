"""The commands of the text domain: ``fit``, ``topics``, ``transform``, ``evaluate``, ``export`` and
``report``."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from topicvae.cli.app import (
    USER_ERRORS, DecodeErrors, DecodeErrorsOption, Encoding, Objective, TextColumn, app, check_creatable,
    echo, fail, interrupted, note_replaced_bytes, print_information, read_documents, run_with_progress, state,
)

#: What `fit --out DIR` writes beside the model: the results, the same for the same seed and
#: inputs on CPU (REPORT_FILE), and the facts of this one process's run (RUN_FILE).
REPORT_FILE, RUN_FILE = "report.json", "run.json"


#: Where `fit --out DIR` keeps its training checkpoint: DIR/checkpoint/checkpoint.pt.
CHECKPOINT_DIR = "checkpoint"


class ModelKind(str, Enum):
    prodlda = "prodlda"
    nvdm = "nvdm"


class Precision(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"


# ------------------------------------------------------------------------------------------
# printing
# ------------------------------------------------------------------------------------------
def _print_topics(model, n_words: int, information: dict | None = None) -> None:
    """Active topics by group, each with its I(x; z_k); then the pruned ones apart, one line each.

    ``information`` is an :func:`~topicvae.objective.information.information_summary`; without it the
    model's own analysis of its training documents is used, or, for models saved before it
    existed, every topic is printed.
    """
    if information is None and getattr(model, "analysis_", None) is not None:
        from topicvae.objective.information import information_summary

        information = information_summary(model, model.analysis_.information, pruning=model.analysis_.pruning)
    table = model.topics(n_words)
    per_topic = information["per_topic"] if information else {}
    pruned = set(information["pruned_topics"]) if information else set()
    for group in model.groups_:
        kind = "Concrete" if group.is_concrete else "Gaussian"
        shown = f"{group.size} {kind} {'categories' if group.is_concrete else 'topics'}"
        if information is not None and group.is_concrete:
            shown += f", I(x; z) = {per_topic[group.name]:.3f} nats" + (" (pruned)" if group.name in pruned else "")
        rows = [(label, row) for label, row in table[table["group"] == group.name].iterrows() if label not in pruned]
        if information is not None and not group.is_concrete:
            rows.sort(key=lambda item: -per_topic[item[0]])
            shown += f", {len(rows)} active"
        echo(f"\ngroup {group.name} ({shown})")
        for label, row in rows:
            mi = "" if information is None or group.is_concrete else f"  MI {per_topic[label]:.3f}"
            echo(f"  {label:>8}{mi}  {' '.join(row['words'])}")
    gaussian_pruned = [label for label in information["pruned_topics"] if ":" in label] if information else []
    if gaussian_pruned:
        echo(f"\npruned topics ({len(gaussian_pruned)}; the encoder does not use them, so their words mean nothing):")
        errors = information.get("per_topic_standard_error") or {}
        for label in sorted(gaussian_pruned, key=lambda label: -per_topic[label]):
            noise = f" ± {2 * errors[label]:.4f} (two standard errors)" if label in errors else ""
            echo(f"  {label:>8}  MI {per_topic[label]:+.4f}{noise}")


def _shown_pairs(model, n_pairs: int, n_words: int):
    """What `fit` and `topics` print and report.json holds: the significant associations across
    groups (largest partial correlation first) and the duplicates, ``n_pairs`` of each; None
    where there are no two Gaussian groups or no analysis."""
    if len(model.groups_.gaussian) < 2 or getattr(model, "analysis_", None) is None:
        return None
    pairs = model.correlated_topics(None, n_words=n_words)
    associations = pairs[(pairs["kind"] == "association") & pairs["significant"]].head(n_pairs)
    duplicates = pairs[pairs["kind"] == "duplicate"].head(n_pairs)
    return associations, duplicates


def _print_pairs(model, n_pairs: int, n_words: int) -> None:
    from topicvae.topics.estimator import DUPLICATE_SHARED_WORDS

    shown = _shown_pairs(model, n_pairs, n_words)
    if shown is None:
        return
    associations, duplicates = shown
    corr = model.analysis_.correlations
    echo(
        f"\nassociated topics across groups (partial correlation under q(z) between active topics, document length "
        f"removed; significant beyond a permutation null at {corr.level:g}, |partial| > {corr.threshold:.3f}):"
    )
    if associations.empty:
        echo("  none beyond the null" + (" (the null is degenerate: every permuted partial correlation is 0)" if corr.threshold <= 0 else ""))
    for row in associations.itertuples():
        echo(f"  partial={row.partial:+.3f}  {row.topic_a:>8}  {' '.join(row.words_a)}")
        echo(f"  {'':14}  {row.topic_b:>8}  {' '.join(row.words_b)}")
    if not duplicates.empty:
        echo(f"duplicates (one theme in both groups: at least {DUPLICATE_SHARED_WORDS} of the top 10 words shared):")
        for row in duplicates.itertuples():
            echo(f"  {row.topic_a:>8} ~ {row.topic_b:<8}  {' '.join(row.words_a[:6])}")


#: The last column of `transform`'s CSV: the document's tokens that are vocabulary words.
VOCABULARY_WORDS_COLUMN = "vocabulary_words"


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
    shown = _shown_pairs(model, n_pairs, n_words)
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
    epochs: Annotated[int, typer.Option(help="Passes over the corpus.")] = 100,
    batch_size: Annotated[Optional[int], typer.Option(help="Documents per step (also the sample that estimates q(z)) [default: 64 ProdLDA, 200 NVDM].")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate (default 2e-3 ProdLDA, 5e-4 NVDM).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the run's own random numbers (initial weights, batch order, dropout, samples).")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Directory for the saved model, report.json (results) and run.json (timings).")] = None,
    min_df: Annotated[float, typer.Option(help="Keep words in at least this many documents (>= 1) or this fraction (< 1).")] = 5,
    max_df: Annotated[float, typer.Option(help="Drop words in more than this fraction (<= 1) or number (> 1) of documents.")] = 0.5,
    max_features: Annotated[int, typer.Option(help="Vocabulary size: the most frequent remaining words.")] = 2000,
    stop_words: Annotated[str, typer.Option(help="'english' (scikit-learn + gensim lists), 'none', or a file of words.")] = "english",
    token_pattern: Annotated[Optional[str], typer.Option(help="Regular expression of a word [default: 3 or more letters of any script, with their vowel signs and accents, and Chinese, Japanese or Korean words of any length]; e.g. '\\S+' keeps any run of non-space characters.")] = None,
    min_word_length: Annotated[Optional[int], typer.Option(help="The shortest word kept, in letters, in alphabetic scripts (instead of --token-pattern), e.g. 2 for 'tv' or 'ai', 1 for single letters; Chinese, Japanese and Korean words are kept at any length.")] = None,
    strip_newsgroup: Annotated[bool, typer.Option(help="Strip newsgroup headers, quotes and signatures first.")] = False,
    text_column: TextColumn = "text",
    encoding: Encoding = "utf-8",
    decode_errors: DecodeErrorsOption = DecodeErrors.strict,
    top_words: Annotated[int, typer.Option(help="Words printed per topic.")] = 10,
    pairs: Annotated[int, typer.Option(help="Correlated topic pairs printed.")] = 10,
    mi_threshold: Annotated[Optional[float], typer.Option(help="Call topics with I(x; z_k) below this many nats pruned [default: the gap rule, docs/analysis.md].")] = None,
    mi_documents: Annotated[int, typer.Option(help="Training documents in the analysis of pruning and correlations (a random subset above this; the cost grows as its square).")] = 5000,
    device: Annotated[str, typer.Option(help="auto (a GPU when there is one), cpu or cuda.")] = "auto",
    precision: Annotated[Precision, typer.Option(help="The model's forward pass in bfloat16 mixed precision (auto: on GPUs that support it); the objective's pairwise densities stay float32.")] = Precision.auto,
    stream: Annotated[bool, typer.Option("--stream", help="Count the corpus in one streaming pass into a bag-of-words on disk and train from it in shards: memory does not grow with the corpus (always on under torchrun).")] = False,
    shard_dir: Annotated[Optional[Path], typer.Option(help="With --stream: keep the sharded bag-of-words here and reuse it on later runs [default: a temporary directory].")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    checkpoint_every: Annotated[Optional[int], typer.Option(help=f"With --out DIR: checkpoint to DIR/{CHECKPOINT_DIR} every N epochs and after the last [default: 1].")] = None,
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
    _print_topics(estimator, top_words, information)
    print_information(information, "training documents")
    _print_pairs(estimator, pairs, top_words)
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


def _load_model(model_dir: Path):
    """The saved model in ``model_dir``; a directory that holds only an unfinished run's checkpoint says so."""
    from topicvae.topics.estimator import TopicModel
    from topicvae.io.model_files import CHECKPOINT_FILE, CONFIG_FILE

    if not (model_dir / CONFIG_FILE).exists() and (model_dir / CHECKPOINT_DIR / CHECKPOINT_FILE).is_file():
        raise FileNotFoundError(
            f"{model_dir} holds the checkpoint of an unfinished run, not a saved model: finish it with the same "
            f"'topicvae fit ... --out {model_dir}' command and --resume"
        )
    return TopicModel.load(model_dir)


@app.command()
def topics(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by `topicvae fit --out`.")],
    top_words: Annotated[int, typer.Option(help="Words printed per topic.")] = 10,
    pairs: Annotated[int, typer.Option(help="Correlated topic pairs printed.")] = 10,
) -> None:
    """Print the topics and the most correlated topic pairs of a saved model."""
    try:
        estimator = _load_model(model_dir)
        echo(f"{estimator.model} with groups {estimator.groups_}, {len(estimator.vocabulary_)} words")
        _print_topics(estimator, top_words)
        _print_pairs(estimator, pairs, top_words)
    except USER_ERRORS as error:
        fail(error)


@app.command()
def transform(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by `topicvae fit --out`.")],
    corpus: Annotated[Path, typer.Argument(help="Documents to represent, in any format `fit` reads.")],
    out: Annotated[Path, typer.Option(help="CSV file (- for stdout): one row per document, one column per topic, and vocabulary_words (0: no word of the vocabulary, topic columns left empty).")],
    text_column: TextColumn = "text",
    encoding: Encoding = "utf-8",
    decode_errors: DecodeErrorsOption = DecodeErrors.strict,
) -> None:
    """Write each document's topic proportions (ProdLDA) or coordinates (NVDM) to a CSV file."""
    try:
        import numpy as np
        import pandas as pd

        from topicvae.topics.estimator import EmptyDocumentWarning

        to_stdout = str(out) == "-"
        if out.is_dir():
            raise IsADirectoryError(f"--out {out} is a directory: give the path of the CSV file to write, or - for stdout")
        estimator = _load_model(model_dir)
        if estimator.vectorizer_ is None:
            raise ValueError(f"{model_dir} was fitted on a count matrix, not on text: transform documents from Python with its vocabulary")
        docs = read_documents(corpus, text_column=text_column, encoding=encoding, decode_errors=decode_errors)
        counts = estimator.vectorizer_.transform(docs)
        with warnings.catch_warnings():
            # said below in the command's words, with the column that marks the rows
            warnings.simplefilter("ignore", EmptyDocumentWarning)
            table = pd.DataFrame(estimator.transform(counts), columns=estimator.topic_labels())
        table.index.name = "document"
        # how many of the document's tokens the model knows: 0 marks a row left empty (NaN)
        table[VOCABULARY_WORDS_COLUMN] = np.asarray(counts.sum(axis=1)).ravel().astype(np.int64)
        empty = int((table[VOCABULARY_WORDS_COLUMN] == 0).sum())
        if not to_stdout:
            _write_table(table, out)
    except USER_ERRORS as error:
        fail(error)
        return
    if to_stdout:  # the table is the output; what was written goes to stderr
        echo(table.to_csv().rstrip("\n"))
    echo(f"wrote {len(table)} documents x {table.shape[1] - 1} topics to {'stdout' if to_stdout else out}", err=to_stdout)
    if empty:
        echo(
            f"note: {empty} of {len(table)} documents have no word of the model's vocabulary: their topic columns are "
            f"left empty and their {VOCABULARY_WORDS_COLUMN} is 0",
            err=True,
        )


def _write_table(table, out: Path) -> None:
    """The CSV whole or not at all (a temporary file renamed); a pipe or device is written to directly.

    Renaming over a named pipe, a terminal or ``/dev/stdout`` would replace it with a file.
    """
    from topicvae.io.atomic import write_file_atomically

    if out.exists() and not out.is_file():
        try:
            with open(out, "w", encoding="utf-8", newline="") as handle:
                table.to_csv(handle)
        except BrokenPipeError:  # the pipe's reader took what it wanted and went (| head)
            pass
        return
    text = table.to_csv()
    write_file_atomically(out, lambda handle: handle.write(text.encode("utf-8")))


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by `topicvae fit --out`.")],
    corpus: Annotated[Optional[Path], typer.Option(help="Documents to evaluate on (default: the training corpus named in report.json).")] = None,
    reference: Annotated[Optional[Path], typer.Option(help="Reference corpus for coherence (default: the evaluated corpus).")] = None,
    top_n: Annotated[int, typer.Option(help="Top words per topic in coherence.")] = 10,
    window: Annotated[int, typer.Option(help="Sliding window of the windowed NPMI.")] = 10,
    mi_threshold: Annotated[Optional[float], typer.Option(help="Call topics with I(x; z_k) below this many nats pruned [default: the gap rule, docs/analysis.md].")] = None,
    pairs: Annotated[int, typer.Option(help="Correlated topic pairs reported.")] = 10,
    labels: Annotated[Optional[str], typer.Option(help="Document labels: a file with one label per line in the corpus's order, or (a .csv/.jsonl corpus) a column or field name. Reports each topic's dominant label, purity and NMI.")] = None,
    within_groups: Annotated[bool, typer.Option(help="Also pair topics of the same group.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with every metric.")] = False,
    plots: Annotated[Optional[Path], typer.Option(help="Directory for PNG plots (MI bars, correlation heatmap).")] = None,
    text_column: TextColumn = "text",
    encoding: Encoding = "utf-8",
    decode_errors: DecodeErrorsOption = DecodeErrors.strict,
) -> None:
    """Coherence, diversity, perplexity, mutual information (with pruned topics) and correlations."""
    try:
        from topicvae.topics.evaluation import evaluate as evaluate_model

        model = _load_model(model_dir)
        if corpus is None:
            corpus = _recorded_corpus(model_dir)
        docs = read_documents(corpus, text_column=text_column, encoding=encoding, decode_errors=decode_errors)
        reference_docs = (
            read_documents(reference, text_column=text_column, encoding=encoding, decode_errors=decode_errors)
            if reference else None
        )
        document_labels = _read_labels(labels, corpus, encoding=encoding, decode_errors=decode_errors) if labels else None
        report = evaluate_model(
            model, docs, reference_docs=reference_docs, corpus_name=str(corpus),
            reference_name=str(reference) if reference else None, top_n=top_n, window=window,
            mi_threshold=mi_threshold, n_pairs=pairs, within_groups=within_groups, plots=plots, labels=document_labels,
        )
    except USER_ERRORS as error:
        fail(error)
        return
    if as_json:
        echo(json.dumps(report, indent=2))
        return
    _print_evaluation(report)


def _html_destination(out: Path, option: str) -> Path:
    if out.is_dir():
        raise IsADirectoryError(f"{option} {out} is a directory: give the path of the HTML file to write, e.g. {out / 'topics.html'}")
    return out


@app.command()
def export(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by `topicvae fit --out`.")],
    pyldavis: Annotated[Path, typer.Option(help="HTML file for pyLDAvis's page (opens without a network).")],
    corpus: Annotated[Optional[Path], typer.Option(help="Documents whose topic proportions and word counts pyLDAvis shows (default: the training corpus named in report.json).")] = None,
    top_words: Annotated[int, typer.Option(help="Words listed per topic on the page (pyLDAvis's R).")] = 30,
    text_column: TextColumn = "text",
    encoding: Encoding = "utf-8",
    decode_errors: DecodeErrorsOption = DecodeErrors.strict,
) -> None:
    """Write a ProdLDA model's topics as a pyLDAvis page (topic i there is the model's column i - 1)."""
    try:
        from topicvae.topics.export import save_pyldavis_html

        destination = _html_destination(pyldavis, "--pyldavis")
        model = _load_model(model_dir)
        if model.vectorizer_ is None:
            raise ValueError(f"{model_dir} was fitted on a count matrix, not on text: use TopicModel.to_pyldavis(counts) from Python")
        if corpus is None:
            corpus = _recorded_corpus(model_dir)
        docs = read_documents(corpus, text_column=text_column, encoding=encoding, decode_errors=decode_errors)
        if top_words < 1:
            raise ValueError(f"--top-words {top_words} is invalid: give a whole number >= 1")
        save_pyldavis_html(model.to_pyldavis(docs, R=top_words), destination)
    except USER_ERRORS as error:
        fail(error)
        return
    echo(f"wrote {destination}: pyLDAvis of {corpus}")


@app.command()
def report(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by `topicvae fit --out`.")],
    html: Annotated[Path, typer.Option(help="The explorer page to write: one self-contained HTML file.")],
    corpus: Annotated[Optional[Path], typer.Option(help="Documents to evaluate on (information, associations, NPMI, perplexity); default: the model's own analysis of its training documents.")] = None,
    labels: Annotated[Optional[str], typer.Option(help="With --corpus: one label per document (a file, or a .csv/.jsonl column); shows each topic's dominant label.")] = None,
    top_words: Annotated[int, typer.Option(help="Words shown per topic.")] = 10,
    pairs: Annotated[int, typer.Option(help="Associated topic pairs listed.")] = 15,
    text_column: TextColumn = "text",
    encoding: Encoding = "utf-8",
    decode_errors: DecodeErrorsOption = DecodeErrors.strict,
) -> None:
    """Write the explorer page: groups side by side, MI per topic, pruned topics, cross-group associations."""
    try:
        from topicvae.topics.explorer import explorer_data, write_explorer

        destination = _html_destination(html, "--html")
        if labels is not None and corpus is None:
            raise ValueError("--labels label the documents of --corpus: pass --corpus FILE too")
        if top_words < 1 or pairs < 0:
            raise ValueError(f"--top-words {top_words} / --pairs {pairs} are invalid: give whole numbers >= 1 and >= 0")
        model = _load_model(model_dir)
        evaluation = None
        if corpus is not None:
            from topicvae.topics.evaluation import evaluate as evaluate_model

            docs = read_documents(corpus, text_column=text_column, encoding=encoding, decode_errors=decode_errors)
            document_labels = _read_labels(labels, corpus, encoding=encoding, decode_errors=decode_errors) if labels else None
            evaluation = evaluate_model(
                model, docs, corpus_name=str(corpus), top_n=top_words, n_pairs=pairs, labels=document_labels,
            )
        data = explorer_data(
            model, evaluation=evaluation, n_words=top_words, n_pairs=pairs, title=f"topicvae: {model_dir.resolve().name}",
            run={"model directory": str(model_dir.resolve())},
        )
        write_explorer(data, destination)
    except USER_ERRORS as error:
        fail(error)
        return
    echo(f"wrote {destination}")


def _recorded_corpus(model_dir: Path) -> Path:
    """The training corpus that `fit --out` recorded in report.json, or an error naming what is wrong with it."""
    path = model_dir / REPORT_FILE
    if not path.is_file():
        raise ValueError(f"{model_dir} has no {REPORT_FILE} naming its training corpus: pass --corpus FILE")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is damaged or incomplete (not valid JSON: {error}), so the training corpus it names is unknown: "
            "pass --corpus FILE (the model itself is read from config.json and weights.pt)"
        ) from None
    recorded = report.get("corpus") if isinstance(report, dict) else None
    if not isinstance(recorded, str) or not recorded:
        raise ValueError(f"{path} names no training corpus (it is damaged or was edited): pass --corpus FILE")
    if not Path(recorded).exists():
        raise FileNotFoundError(f"the training corpus named in {path}, {recorded}, is not there any more: pass --corpus FILE")
    return Path(recorded)


def _read_labels(labels: str, corpus: Path, *, encoding: str, decode_errors: DecodeErrors) -> list[str]:
    """One label per document: the lines of a file, or a column of a .csv/.jsonl corpus."""
    path = Path(labels)
    if path.is_file():
        lines = path.read_text(encoding=encoding, errors=decode_errors.value).splitlines()
        while lines and not lines[-1].strip():  # trailing blank lines end the file, they label nothing
            lines.pop()
        return lines
    if corpus.suffix.lower() in (".csv", ".jsonl") or corpus.name.lower().endswith((".csv.gz", ".jsonl.gz")):
        try:
            return list(read_documents(corpus, text_column=labels, encoding=encoding, decode_errors=decode_errors))
        except ValueError as error:  # the reader names --text-column, which is not what the user gave
            raise ValueError(
                f"--labels {labels} is neither a file nor a column or field of {corpus}: give a file with one label "
                "per line, or the name of the column that holds the labels"
            ) from error
    raise ValueError(
        f"--labels {labels} is not a file, and {corpus} has no columns: give a file with one label per line"
    )


def _score(value: float | None) -> str:
    return "not scored" if value is None else f"{value:.3f}"


def _unscored(entry: dict) -> str:
    """How many topics a coherence mean leaves out, and why."""
    missing = entry.get("unscored_topics") or []
    if not missing:
        return ""
    total = len(entry["per_topic"])
    return f" over {total - len(missing)} of {total} topics ({', '.join(missing)}: fewer than 2 top words occur in the reference)"


def _print_evaluation(report: dict) -> None:
    coherence, information = report["coherence"], report["information"]
    doc, win = coherence["npmi_document"], coherence["npmi_window"]
    echo(f"corpus: {report['corpus']['name']} ({report['corpus']['documents_with_words']} documents with vocabulary words)")
    echo(f"NPMI, whole documents, top {doc['top_n']}, reference {doc['reference']}: {_score(doc['mean'])}{_unscored(doc)}")
    echo(f"NPMI, sliding window {win['window']}, top {win['top_n']}, reference {win['reference']}: {_score(win['mean'])}{_unscored(win)}")
    for name, label in (("c_v", "C_V"), ("u_mass", "UMass")):
        entry = coherence[name]
        echo(f"{label} (gensim), {'window ' + str(entry['window']) if entry['window'] != 'whole document' else 'whole documents'}, top {entry['top_n']}: {_score(entry['mean'])}{_unscored(entry)}")
    absent = sorted({word for words in doc["absent_words"].values() for word in words})
    if absent:
        echo(
            f"  top words absent from the reference, left out of their topics' pairs: {' '.join(absent[:20])}"
            + (f" ... ({len(absent)} words)" if len(absent) > 20 else "") + f" (in {len(doc['absent_words'])} topic{'s' if len(doc['absent_words']) != 1 else ''})"
        )
    echo(f"topic diversity (top 25): {report['diversity']['value']:.3f}")
    for name, entry in report["perplexity"].items():
        echo(f"perplexity, {name.replace('_', '-')} = {entry['formula']}: {entry['value']:.1f}")
    for name, entry in (("NPMI, whole documents", doc), ("NPMI, window", win)):
        if entry.get("mean_active_topics") is not None:
            echo(f"{name}, active topics only: {entry['mean_active_topics']:.3f}")
    if report["diversity"].get("active_topics") is not None:
        echo(f"topic diversity (top 25), active topics only: {report['diversity']['active_topics']:.3f}")
    print_information(information, "evaluated documents")
    correlations = report["correlations"]
    echo(f"\nstrongest associations ({correlations['measure']}; null: {correlations['null']})")
    for pair in correlations["strongest"]:
        flag = "*" if pair["significant"] else " "
        kind = " duplicate" if pair["kind"] == "duplicate" else ""
        label_a = f"  [{pair['label_a']}]" if "label_a" in pair else ""
        label_b = f"  [{pair['label_b']}]" if "label_b" in pair else ""
        lead = f"  {flag}partial={pair['partial']:+.3f} null={pair['null_quantile']:.3f}{kind}  "
        echo(f"{lead}{pair['topic_a']:>8}  {' '.join(pair['words_a'])}{label_a}")
        echo(f"{'':{len(lead)}}{pair['topic_b']:>8}  {' '.join(pair['words_b'])}{label_b}")
    if "labels" in report:
        aligned = report["labels"]
        echo(f"\nlabels: purity {aligned['purity']:.3f}, NMI {aligned['nmi']:.3f} of the documents' top topics over {aligned['documents']} documents")
        for topic, entry in aligned["per_topic"].items():
            if topic in information["active_topics"]:
                echo(f"  {topic:>8}  {entry['label']} ({entry['share']:.0%})")
    for path in report.get("plots", []):
        echo(f"wrote {path}")
