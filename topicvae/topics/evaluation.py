"""Every metric of a trained model on a corpus, as one JSON-ready dict (``topicvae evaluate``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from topicvae.topics.analysis import plot_correlation
from topicvae.objective.information import check_mi_threshold, information_summary, plot_information
from topicvae.topics.coherence import document_npmi, gensim_coherence, topic_diversity
from topicvae.topics.estimator import TopicModel, perplexity_from_elbo

__all__ = ["evaluate", "pair_records"]


def pair_records(pairs) -> list[dict]:
    """The rows of a ``TopicModel.correlated_topics`` table as JSON-ready dicts (plain Python values)."""
    return [
        {
            "topic_a": row.topic_a, "topic_b": row.topic_b, "partial": float(row.partial),
            "correlation": float(row.correlation), "null_quantile": float(row.null_quantile),
            "significant": bool(row.significant), "kind": row.kind, "shared_words": int(row.shared_words),
            "words_a": list(row.words_a), "words_b": list(row.words_b),
        }
        for row in pairs.itertuples()
    ]


def evaluate(
    model: TopicModel,
    docs: Sequence[str],
    *,
    reference_docs: Sequence[str] | None = None,
    corpus_name: str = "evaluated corpus",
    reference_name: str | None = None,
    top_n: int = 10,
    window: int = 10,
    mi_threshold: float | None = None,
    n_pairs: int = 10,
    within_groups: bool = False,
    plots: str | Path | None = None,
    seed: int = 0,
    labels: Sequence[str] | None = None,
    max_documents: int | None = 20000,
) -> dict:
    """Coherence, diversity, perplexity, information, correlations (and label alignment) of ``model`` on ``docs``.

    Coherence is scored against ``reference_docs`` (default: ``docs``). Mutual information,
    total correlations and topic associations are taken over ``docs`` (at most
    ``max_documents`` of them, drawn at random) with N = their number; topics are pruned by
    the gap rule, or below ``mi_threshold`` nats when it is given. With ``labels`` (one per
    document of ``docs``), each topic's dominant label, purity and NMI
    (:func:`topicvae.topics.analysis.label_alignment`).
    """
    check_mi_threshold(mi_threshold)
    reference_docs = docs if reference_docs is None else reference_docs
    reference_name = reference_name or corpus_name
    topic_names = model.topic_labels()
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
    analysis = model.analyse(counts, max_documents=max_documents, seed=seed, mi_threshold=mi_threshold)
    pairs_table = model.correlated_topics(n_pairs, across_groups=not within_groups, analysis=analysis)
    summary = information_summary(model, analysis.information, mi_threshold)
    correlations = analysis.correlations

    report = {
        "corpus": {"name": corpus_name, "documents": int(len(docs)), "documents_with_words": int(nonempty.sum())},
        "coherence": {
            "npmi_document": _coherence_entry(npmi_document, summary, model),
            "npmi_window": _coherence_entry(npmi_window, summary, model),
            "c_v": _coherence_entry(c_v, summary, model),
            "u_mass": _coherence_entry(u_mass, summary, model),
        },
        "diversity": {
            "top_n": 25,
            "value": topic_diversity(topics, top_n=25),
            "active_topics": _active_diversity(topics, summary, model),
        },
        "perplexity": {
            "corpus_level": {"value": perplexity_from_elbo(*elbo), "formula": "exp(sum_d -ELBO_d / sum_d N_d)"},
            "per_document": {"value": perplexity_from_elbo(*elbo, per_document=True), "formula": "exp(mean_d(-ELBO_d / N_d))"},
        },
        "information": summary,
        "correlations": {
            "measure": (
                "partial correlation under q(z) between active topics (graphical lasso, penalty "
                f"{correlations.shrinkage:g}), log document length partialled out, over {correlations.n_documents} documents"
            ),
            "null": (
                f"each topic's documents permuted on their own, {correlations.n_permutations} times; significant: |partial| "
                f"above the {1 - correlations.level:g} quantile of the largest |partial| over all pairs ({correlations.threshold:.3f})"
            ),
            "threshold": correlations.threshold,
            "topics": [topic_names[i] for i in correlations.topics.tolist()],
            "partial": correlations.partial.tolist(),
            "null_quantile": correlations.null_quantile.tolist(),
            "strongest": pair_records(pairs_table),
        },
    }
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(docs):
            raise ValueError(f"--labels has {len(labels)} labels for {len(docs)} documents: give one label per document, in order")
        alignment = model.label_alignment(docs, labels, topics=correlations.topics.tolist())
        report["labels"] = {
            "purity": alignment.purity,
            "nmi": alignment.nmi,
            "documents": alignment.documents,
            "per_topic": {
                topic_names[k]: {"label": alignment.dominant_label[k], "share": float(alignment.dominant_share[k])}
                for k in range(len(topic_names))
            },
        }
        dominant = report["labels"]["per_topic"]
        for pair in report["correlations"]["strongest"]:
            pair["label_a"], pair["label_b"] = dominant[pair["topic_a"]]["label"], dominant[pair["topic_b"]]["label"]
    if plots is not None:
        directory = Path(plots)
        directory.mkdir(parents=True, exist_ok=True)
        active = np.isin(model.groups_.variable_labels(), summary["active_topics"])
        plot_information(analysis.information, model.groups_.variable_labels(), active, directory / "mutual_information.png")
        chosen = [topic_names[i] for i in correlations.topics.tolist()]
        plot_correlation(correlations.partial, chosen, directory / "correlation.png", null=correlations.null_quantile, threshold=correlations.threshold)
        report["plots"] = [str(directory / "mutual_information.png"), str(directory / "correlation.png")]
    return report


def _active_columns(summary: dict, model) -> list[int]:
    active = set(summary["active_topics"])
    return [k for k, label in enumerate(model.topic_labels()) if label in active or label.split(":")[0] in active]


def _coherence_entry(result, summary: dict, model) -> dict:
    labels = model.topic_labels()
    scored = result.scored
    return {
        "mean": result.mean if scored.any() else None,
        "mean_active_topics": result.mean_over(_active_columns(summary, model)),
        "per_topic": [float(v) if ok else None for v, ok in zip(result.per_topic, scored)],
        # the reference never contains these top words: their pairs are left out, and topics
        # with fewer than two words left are not scored (CoherenceResult)
        "absent_words": {labels[k]: words for k, words in enumerate(result.absent_words) if words},
        "unscored_topics": [labels[k] for k in np.flatnonzero(~scored)],
        **result.settings,
    }


def _active_diversity(topics, summary: dict, model) -> float | None:
    columns = _active_columns(summary, model)
    return topic_diversity([topics[k] for k in columns], top_n=25) if columns else None


