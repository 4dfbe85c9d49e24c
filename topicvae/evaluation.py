"""Every metric of a trained model on a corpus, as one JSON-ready dict (``topicvae evaluate``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from topicvae.analysis import InformationReport, correlation_p_values, plot_correlation, plot_information
from topicvae.coherence import document_npmi, gensim_coherence, topic_diversity
from topicvae.estimator import TopicModel, perplexity_from_elbo

__all__ = ["evaluate", "information_summary"]


def evaluate(
    model: TopicModel,
    docs: Sequence[str],
    *,
    reference_docs: Sequence[str] | None = None,
    corpus_name: str = "evaluated corpus",
    reference_name: str | None = None,
    top_n: int = 10,
    window: int = 10,
    mi_threshold: float = 0.1,
    n_pairs: int = 10,
    within_groups: bool = False,
    plots: str | Path | None = None,
    seed: int = 0,
) -> dict:
    """Coherence, diversity, perplexity, information and correlations of ``model`` on ``docs``.

    Coherence is scored against ``reference_docs`` (default: ``docs``). Mutual information,
    total correlations and topic correlations are taken over ``docs`` with N = their number;
    topics whose I(x; z_k) is below ``mi_threshold`` nats are reported as pruned.
    """
    check_mi_threshold(mi_threshold)
    reference_docs = docs if reference_docs is None else reference_docs
    reference_name = reference_name or corpus_name
    labels = model.topic_labels()
    topics = model.topics(max(top_n, 25))["words"].tolist()
    top_words = [words[:top_n] for words in topics]

    reference_counts = model.vectorizer_.transform(reference_docs) if model.vectorizer_ else None
    if reference_counts is None:
        raise ValueError("this model was fitted on a count matrix: evaluate needs a model fitted on text")
    npmi_document = document_npmi(top_words, reference_counts, model.vocabulary_, top_n=top_n, reference_name=reference_name)
    tokenized = model.vectorizer_.tokenize(reference_docs)
    npmi_window = gensim_coherence(
        top_words, tokenized, measure="c_npmi", top_n=top_n, window_size=window, reference_name=reference_name
    )
    c_v = gensim_coherence(top_words, tokenized, measure="c_v", top_n=top_n, reference_name=reference_name)
    u_mass = gensim_coherence(top_words, tokenized, measure="u_mass", top_n=top_n, reference_name=reference_name)

    counts = model.vectorizer_.transform(docs)
    nonempty = np.asarray(counts.sum(axis=1)).ravel() > 0
    counts = counts[nonempty]
    elbo = model.document_elbo(counts, seed=seed)  # once, for both perplexity variants
    information = model.information(counts, seed=seed)
    correlation = model.topic_correlation(counts)
    pairs_table = model.correlated_topics(n_pairs, across_groups=not within_groups, correlation=correlation)
    index = {label: i for i, label in enumerate(labels)}
    tested = [(i, j) for i in range(len(labels)) for j in range(i + 1, len(labels))
              if within_groups or labels[i].split(":")[0] != labels[j].split(":")[0]]
    _, p_adjusted = correlation_p_values(correlation, int(counts.shape[0]), tested)
    adjusted = {pair: p for pair, p in zip(tested, p_adjusted)}

    report = {
        "corpus": {"name": corpus_name, "documents": int(len(docs)), "documents_with_words": int(nonempty.sum())},
        "coherence": {
            "npmi_document": {"mean": npmi_document.mean, "per_topic": npmi_document.per_topic.tolist(), **npmi_document.settings},
            "npmi_window": {"mean": npmi_window.mean, "per_topic": npmi_window.per_topic.tolist(), **npmi_window.settings},
            "c_v": {"mean": c_v.mean, "per_topic": c_v.per_topic.tolist(), **c_v.settings},
            "u_mass": {"mean": u_mass.mean, "per_topic": u_mass.per_topic.tolist(), **u_mass.settings},
        },
        "diversity": {"top_n": 25, "value": topic_diversity(topics, top_n=25)},
        "perplexity": {
            "corpus_level": {"value": perplexity_from_elbo(*elbo), "formula": "exp(sum_d -ELBO_d / sum_d N_d)"},
            "per_document": {"value": perplexity_from_elbo(*elbo, per_document=True), "formula": "exp(mean_d(-ELBO_d / N_d))"},
        },
        "information": information_summary(model, information, mi_threshold),
        "correlations": {
            "measure": "correlation under the inference marginal q(z) over the evaluated documents",
            "test": "Fisher z of r = 0 with n = documents, Benjamini-Hochberg over the tested pairs",
            "pairs_tested": len(tested),
            "strongest": [
                {
                    "topic_a": row.topic_a,
                    "topic_b": row.topic_b,
                    "correlation": row.correlation,
                    "p_adjusted": float(adjusted[tuple(sorted((index[row.topic_a], index[row.topic_b])))]),
                    "words_a": list(row.words_a),
                    "words_b": list(row.words_b),
                }
                for row in pairs_table.itertuples()
            ],
        },
    }
    if plots is not None:
        directory = Path(plots)
        directory.mkdir(parents=True, exist_ok=True)
        plot_information(information, model.groups_.variable_labels(), mi_threshold, directory / "mutual_information.png")
        plot_correlation(correlation, labels, directory / "correlation.png")
        report["plots"] = [str(directory / "mutual_information.png"), str(directory / "correlation.png")]
    return report


def check_mi_threshold(mi_threshold: float) -> None:
    """Raise a ValueError that names ``mi_threshold`` unless it is a finite number >= 0."""
    if not np.isfinite(mi_threshold) or mi_threshold < 0:
        raise ValueError(f"mi_threshold={mi_threshold!r} is invalid: give a number of nats >= 0")


def information_summary(model: TopicModel, information: InformationReport, mi_threshold: float) -> dict:
    """The information quantities as a JSON-ready dict, with the variables kept and pruned.

    A variable is a Gaussian topic or a whole Concrete group (its categories share one
    variable, so they are kept or pruned together); pruned means I(x; z_de) < ``mi_threshold``.
    """
    check_mi_threshold(mi_threshold)
    names = [group.name for group in model.groups_]
    labels = model.groups_.variable_labels()
    active = information.active(mi_threshold)
    return {
        "dataset_size": information.dataset_size,
        "mutual_information": information.mutual_information,
        "per_group": dict(zip(names, information.per_group.tolist())),
        "tc_between": information.tc_between,
        "tc_within": dict(zip(names, information.tc_within.tolist())),
        "per_topic": dict(zip(labels, information.per_variable.tolist())),
        "threshold": mi_threshold,
        "active_topics": [labels[i] for i in np.flatnonzero(active)],
        "pruned_topics": [labels[i] for i in np.flatnonzero(~active)],
    }
