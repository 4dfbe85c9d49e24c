"""The ``topicvae`` command line: parse, call the library, print."""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="topicvae",
    help="Neural topic models (ProdLDA, NVDM) with grouped latent topics, trained with the HFVAE objective.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Fetch or convert public corpora into one-document-per-line files.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_state = {"debug": False}

#: Short names for the progress bar.
_BAR_TERMS = {"loss": "loss", "reconstruction": "LL", "mutual_information": "MI", "tc_between": "TCb", "tc_within": "TCw", "dimwise_kl": "KL"}


class ModelKind(str, Enum):
    prodlda = "prodlda"
    nvdm = "nvdm"


class Objective(str, Enum):
    hfvae = "hfvae"
    vae = "vae"
    beta_vae = "beta-vae"
    beta_tcvae = "beta-tcvae"


class Subset(str, Enum):
    train = "train"
    test = "test"
    all = "all"


def _fail(error: BaseException) -> None:
    """One line on stderr and exit code 1; the traceback only with --debug."""
    if _state["debug"]:
        raise error
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError, FloatingPointError, RuntimeError, UnicodeError)


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error.")] = False,
) -> None:
    _state["debug"] = debug


# ------------------------------------------------------------------------------------------
# printing
# ------------------------------------------------------------------------------------------
def _print_topics(model, n_words: int) -> None:
    table = model.topics(n_words)
    for group in model.groups_:
        kind = "Concrete" if group.is_concrete else "Gaussian"
        typer.echo(f"\ngroup {group.name} ({group.size} {kind} {'categories' if group.is_concrete else 'topics'})")
        for label, row in table[table["group"] == group.name].iterrows():
            typer.echo(f"  {label:>8}  {' '.join(row['words'])}")


def _print_pairs(model, n_pairs: int, n_words: int) -> None:
    if len(model.groups_) < 2:
        return
    pairs = model.correlated_topics(n_pairs, n_words=n_words)
    typer.echo("\nmost positively correlated topics across groups (correlation under the inference marginal q(z) over the training documents)")
    for row in pairs.itertuples():
        typer.echo(f"  r={row.correlation:+.3f}  {row.topic_a:>8}  {' '.join(row.words_a)}")
        typer.echo(f"  {'':8}  {row.topic_b:>8}  {' '.join(row.words_b)}")


def _report(model, n_words: int, n_pairs: int, seconds: float | None, corpus: Path) -> dict:
    topics = model.topics(n_words)
    pairs = model.correlated_topics(n_pairs, n_words=n_words) if len(model.groups_) > 1 else None
    return {
        "corpus": str(corpus.resolve()),
        "model": model.model,
        "groups": str(model.groups_),
        "weights": model.weights_.as_dict(),
        "n_documents": model.n_documents_,
        "n_empty_documents": model.n_empty_documents_,
        "vocabulary_size": len(model.vocabulary_),
        "training_seconds": seconds,
        "seconds_per_epoch": (seconds / len(model.history_)) if seconds and model.history_ else None,
        "topics": [
            {"label": label, "group": row["group"], "index": int(row["topic"]), "words": list(row["words"])}
            for label, row in topics.iterrows()
        ],
        "correlated_pairs": []
        if pairs is None
        else [
            {"topic_a": row.topic_a, "topic_b": row.topic_b, "correlation": row.correlation}
            for row in pairs.itertuples()
        ],
        "history": model.history_,
    }


def _write_json_atomically(payload: dict, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)


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
    batch_size: Annotated[int, typer.Option(help="Documents per step (also the sample that estimates q(z)).")] = 200,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate (default 2e-3 ProdLDA, 5e-4 NVDM).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds Python, NumPy and torch.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Directory for the saved model and report.json.")] = None,
    min_df: Annotated[float, typer.Option(help="Keep words in at least this many documents (>= 1) or this fraction (< 1).")] = 5,
    max_df: Annotated[float, typer.Option(help="Drop words in more than this fraction (<= 1) or number (> 1) of documents.")] = 0.5,
    max_features: Annotated[int, typer.Option(help="Vocabulary size: the most frequent remaining words.")] = 2000,
    stop_words: Annotated[str, typer.Option(help="'english' (scikit-learn + gensim lists), 'none', or a file of words.")] = "english",
    strip_newsgroup: Annotated[bool, typer.Option(help="Strip newsgroup headers, quotes and signatures first.")] = False,
    text_column: Annotated[str, typer.Option(help="Column (.csv) or field (.jsonl) holding the text.")] = "text",
    encoding: Annotated[str, typer.Option(help="The corpus's text encoding, e.g. utf-8 or latin-1.")] = "utf-8",
    top_words: Annotated[int, typer.Option(help="Words printed per topic.")] = 10,
    pairs: Annotated[int, typer.Option(help="Correlated topic pairs printed.")] = 10,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Fit a topic model and print the top words of every topic and the most correlated topics."""
    try:
        from topicvae.estimator import TopicModel
        from topicvae.text import TextVectorizer, load_vocabulary, read_corpus

        if out is not None and out.exists() and not out.is_dir():
            raise FileExistsError(f"--out {out} exists and is not a directory: choose another path")
        if stop_words == "none":
            stops: object = None
        elif stop_words == "english":
            stops = "english"
        else:
            stops = load_vocabulary(stop_words)
        vectorizer = TextVectorizer(
            min_df=_count_or_fraction(min_df, low_is_fraction=True),
            max_df=_count_or_fraction(max_df, low_is_fraction=False),
            max_features=max_features,
            stop_words=stops,
            strip_newsgroup=strip_newsgroup,
        )
        docs = read_corpus(corpus, text_column=text_column, encoding=encoding)
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
        )
        started = time.perf_counter()
        _run_with_progress(estimator.fit_iter(docs), enabled=progress)
        seconds = time.perf_counter() - started
    except _USER_ERRORS as error:
        _fail(error)
        return

    typer.echo(
        f"{estimator.model} with groups {estimator.groups_} on {estimator.n_documents_} documents "
        f"({estimator.n_empty_documents_} left empty by the vocabulary and skipped), {len(estimator.vocabulary_)} words; "
        f"{', '.join(f'{k}={v:g}' for k, v in estimator.weights_.as_dict().items())}; "
        f"{estimator.epochs} epochs in {seconds:.1f} s ({seconds / estimator.epochs:.2f} s per epoch)"
    )
    _print_topics(estimator, top_words)
    _print_pairs(estimator, pairs, top_words)
    if out is not None:
        try:
            estimator.save(out)
            _write_json_atomically(_report(estimator, top_words, pairs, seconds, corpus), out / "report.json")
        except _USER_ERRORS as error:
            _fail(error)
        typer.echo(f"\nsaved the model and report.json to {out}")


def _count_or_fraction(value: float, *, low_is_fraction: bool) -> int | float:
    """CLI numbers: whole numbers >= 1 are document counts, others fractions (as in scikit-learn)."""
    if value == int(value) and (value > 1 or (value == 1 and low_is_fraction)):
        return int(value)
    return float(value)


def _run_with_progress(steps, *, enabled: bool) -> None:
    from tqdm import tqdm

    bar = None
    try:
        for progress in steps:
            if bar is None:
                bar = tqdm(
                    total=progress.epochs * progress.steps_per_epoch,
                    disable=not enabled,
                    file=sys.stderr,
                    unit="step",
                    dynamic_ncols=True,
                )
            bar.update(1)
            if progress.step == progress.steps_per_epoch or progress.step % 10 == 0:
                terms = progress.epoch_terms or progress.terms
                bar.set_description(f"epoch {progress.epoch}/{progress.epochs}", refresh=False)
                bar.set_postfix({short: f"{terms[name]:.3g}" for name, short in _BAR_TERMS.items()}, refresh=False)
    finally:
        if bar is not None:
            bar.close()


@app.command()
def topics(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by `topicvae fit --out`.")],
    top_words: Annotated[int, typer.Option(help="Words printed per topic.")] = 10,
    pairs: Annotated[int, typer.Option(help="Correlated topic pairs printed.")] = 10,
) -> None:
    """Print the topics and the most correlated topic pairs of a saved model."""
    try:
        from topicvae.estimator import TopicModel

        estimator = TopicModel.load(model_dir)
        typer.echo(f"{estimator.model} with groups {estimator.groups_}, {len(estimator.vocabulary_)} words")
        _print_topics(estimator, top_words)
        _print_pairs(estimator, pairs, top_words)
    except _USER_ERRORS as error:
        _fail(error)


@app.command()
def transform(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by `topicvae fit --out`.")],
    corpus: Annotated[Path, typer.Argument(help="Documents to represent, in any format `fit` reads.")],
    out: Annotated[Path, typer.Option(help="CSV file: one row per document, one column per topic.")],
    text_column: Annotated[str, typer.Option(help="Column (.csv) or field (.jsonl) holding the text.")] = "text",
    encoding: Annotated[str, typer.Option(help="The corpus's text encoding, e.g. utf-8 or latin-1.")] = "utf-8",
) -> None:
    """Write each document's topic proportions (ProdLDA) or coordinates (NVDM) to a CSV file."""
    try:
        import pandas as pd

        from topicvae.estimator import TopicModel
        from topicvae.text import read_corpus

        estimator = TopicModel.load(model_dir)
        docs = read_corpus(corpus, text_column=text_column, encoding=encoding)
        table = pd.DataFrame(estimator.transform(docs), columns=estimator.topic_labels())
        table.index.name = "document"
        out.parent.mkdir(parents=True, exist_ok=True)
        temporary = out.with_name(f".{out.name}.tmp")
        table.to_csv(temporary)
        temporary.replace(out)
    except _USER_ERRORS as error:
        _fail(error)
        return
    typer.echo(f"wrote {len(table)} documents x {table.shape[1]} topics to {out}")


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by `topicvae fit --out`.")],
    corpus: Annotated[Optional[Path], typer.Option(help="Documents to evaluate on (default: the training corpus named in report.json).")] = None,
    reference: Annotated[Optional[Path], typer.Option(help="Reference corpus for coherence (default: the evaluated corpus).")] = None,
    top_n: Annotated[int, typer.Option(help="Top words per topic in coherence.")] = 10,
    window: Annotated[int, typer.Option(help="Sliding window of the windowed NPMI.")] = 10,
    mi_threshold: Annotated[float, typer.Option(help="Topics with I(x; z_k) below this many nats are reported as pruned.")] = 0.1,
    pairs: Annotated[int, typer.Option(help="Correlated topic pairs reported.")] = 10,
    within_groups: Annotated[bool, typer.Option(help="Also pair topics of the same group.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with every metric.")] = False,
    plots: Annotated[Optional[Path], typer.Option(help="Directory for PNG plots (MI bars, correlation heatmap).")] = None,
    text_column: Annotated[str, typer.Option(help="Column (.csv) or field (.jsonl) holding the text.")] = "text",
    encoding: Annotated[str, typer.Option(help="The corpus's text encoding, e.g. utf-8 or latin-1.")] = "utf-8",
) -> None:
    """Coherence, diversity, perplexity, mutual information (with pruned topics) and correlations."""
    try:
        from topicvae.estimator import TopicModel
        from topicvae.evaluation import evaluate as evaluate_model
        from topicvae.text import read_corpus

        model = TopicModel.load(model_dir)
        if corpus is None:
            recorded = json.loads((model_dir / "report.json").read_text()).get("corpus") if (model_dir / "report.json").is_file() else None
            if not recorded:
                raise ValueError(f"{model_dir} records no training corpus: pass --corpus FILE")
            corpus = Path(recorded)
        docs = read_corpus(corpus, text_column=text_column, encoding=encoding)
        reference_docs = read_corpus(reference, text_column=text_column, encoding=encoding) if reference else None
        report = evaluate_model(
            model, docs, reference_docs=reference_docs, corpus_name=str(corpus),
            reference_name=str(reference) if reference else None, top_n=top_n, window=window,
            mi_threshold=mi_threshold, n_pairs=pairs, within_groups=within_groups, plots=plots,
        )
    except _USER_ERRORS as error:
        _fail(error)
        return
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_evaluation(report)


def _print_evaluation(report: dict) -> None:
    coherence, information = report["coherence"], report["information"]
    doc, win = coherence["npmi_document"], coherence["npmi_window"]
    typer.echo(f"corpus: {report['corpus']['name']} ({report['corpus']['documents_with_words']} documents with vocabulary words)")
    typer.echo(f"NPMI, whole documents, top {doc['top_n']}, reference {doc['reference']}: {doc['mean']:.3f}")
    typer.echo(f"NPMI, sliding window {win['window']}, top {win['top_n']}, reference {win['reference']}: {win['mean']:.3f}")
    typer.echo(f"topic diversity (top 25): {report['diversity']['value']:.3f}")
    for name, entry in report["perplexity"].items():
        typer.echo(f"perplexity, {name.replace('_', '-')} = {entry['formula']}: {entry['value']:.1f}")
    typer.echo(
        f"I(x; z) = {information['mutual_information']:.3f} nats (N = {information['dataset_size']}), "
        f"TC between groups = {information['tc_between']:.3f}, "
        f"TC within = {', '.join(f'{k} {v:.3f}' for k, v in information['tc_within'].items())}"
    )
    if information["per_topic"] is not None:
        active, pruned = information["active_topics"], information["pruned_topics"]
        typer.echo(f"{len(active)} topics with I(x; z_k) >= {information['threshold']:g} nats; pruned: {' '.join(pruned) or 'none'}")
    typer.echo(f"\nmost correlated topic pairs ({report['correlations']['measure']}; {report['correlations']['test']})")
    for pair in report["correlations"]["strongest"]:
        typer.echo(f"  r={pair['correlation']:+.3f} p_adj={pair['p_adjusted']:.2g}  {pair['topic_a']:>8}  {' '.join(pair['words_a'])}")
        typer.echo(f"  {'':21}  {pair['topic_b']:>8}  {' '.join(pair['words_b'])}")
    for path in report.get("plots", []):
        typer.echo(f"wrote {path}")


@data_app.command("20newsgroups")
def data_20newsgroups(
    out: Annotated[Path, typer.Option(help="Output file, one post per line (.txt or .txt.gz).")],
    subset: Annotated[Subset, typer.Option(help="The bydate split.")] = Subset.train,
    source: Annotated[Optional[Path], typer.Option(help="A local copy (jsonl.gz files or the bydate folders); without it scikit-learn downloads and caches the data.")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="Also write each written post's newsgroup, one per line.")] = None,
    keep_headers: Annotated[bool, typer.Option(help="Keep headers, quotes and signatures (they leak the newsgroup).")] = False,
) -> None:
    """Write the 20 Newsgroups posts one per line (inner newlines folded)."""
    try:
        from topicvae.datasets import load_20newsgroups
        from topicvae.text import write_corpus_lines

        remove = () if keep_headers else ("headers", "footers", "quotes")
        dataset = load_20newsgroups(subset.value, source=source, remove=remove)
        kept = [i for i, text in enumerate(dataset.texts) if text.split()]
        write_corpus_lines([dataset.texts[i] for i in kept], out)
        if labels is not None:
            write_corpus_lines([dataset.label_names[dataset.labels[i]] for i in kept], labels)
    except _USER_ERRORS as error:
        _fail(error)
        return
    skipped = len(dataset.texts) - len(kept)
    typer.echo(f"wrote {len(kept)} posts of the {subset.value} split to {out} ({skipped} left empty by stripping were skipped)")


if __name__ == "__main__":  # pragma: no cover
    app()
