"""The commands that read a saved topic model: ``topics``, ``transform``, ``evaluate``, ``export``
and ``report`` (``fit`` is :mod:`topicvae.cli.fit`)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from topicvae.cli.app import (
    USER_ERRORS, DecodeErrors, DecodeErrorsOption, Encoding, TextColumn, app, echo, fail, print_information,
    read_documents,
)
from topicvae.cli.printing import CHECKPOINT_DIR, REPORT_FILE, print_pairs, print_topics


#: The last column of `transform`'s CSV: the document's tokens that are vocabulary words.
VOCABULARY_WORDS_COLUMN = "vocabulary_words"


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
        print_topics(estimator, top_words)
        print_pairs(estimator, pairs, top_words)
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
    mi_threshold: Annotated[Optional[float], typer.Option(help="Call topics with I(x; z_k) below this many nats pruned (default: the gap rule, docs/analysis.md).")] = None,
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
