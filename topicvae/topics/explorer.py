"""The explorer page: one self-contained HTML file that shows what topicvae adds to a topic model.

Its groups side by side, each topic with its top words and its mutual information I(x; z_k)
(the active topics by MI, the pruned ones apart), the partial correlations between active
topics of different groups as a heatmap with the strongest pairs listed (duplicates apart),
the run's settings and metrics, and, when documents with labels are given, each topic's
dominant label.

Two steps, kept apart: :func:`explorer_data` turns a fitted model (and optionally an
:func:`topicvae.topics.evaluation.evaluate` report on documents) into plain JSON-ready data;
:func:`render_explorer` turns that data into HTML with a Jinja2 template and Plotly figures.
The page carries plotly.js inline, so it opens without a network.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from topicvae.io.atomic import write_file_atomically

if TYPE_CHECKING:  # pragma: no cover
    from topicvae.topics.estimator import TopicModel

__all__ = ["explorer_data", "render_explorer", "write_explorer"]

def _information(model: TopicModel, evaluation: dict | None) -> dict | None:
    if evaluation is not None:
        return evaluation["information"]
    if getattr(model, "analysis_", None) is None:
        return None
    from topicvae.objective.information import information_summary

    return information_summary(model, model.analysis_.information, pruning=model.analysis_.pruning)


def _correlations(model: TopicModel, evaluation: dict | None, n_pairs: int, n_words: int) -> dict | None:
    """The partial-correlation matrix over active topics and the strongest pairs across groups."""
    if len(model.groups_.gaussian) < 2:
        return None
    labels = model.topic_labels()
    if evaluation is not None:
        correlations = evaluation["correlations"]
        pairs = [dict(pair) for pair in correlations["strongest"]]
        matrix, topics, threshold = correlations["partial"], correlations["topics"], correlations["threshold"]
    else:
        if getattr(model, "analysis_", None) is None:
            return None
        found = model.analysis_.correlations
        matrix, topics, threshold = found.partial.tolist(), [labels[i] for i in found.topics.tolist()], found.threshold
        from topicvae.topics.evaluation import pair_records

        pairs = pair_records(model.correlated_topics(n_pairs, n_words=n_words))
    return {"topics": topics, "partial": matrix, "threshold": threshold, "pairs": pairs[:n_pairs]}


def explorer_data(
    model: TopicModel,
    *,
    evaluation: dict | None = None,
    n_words: int = 10,
    n_pairs: int = 15,
    title: str | None = None,
    run: dict | None = None,
) -> dict[str, Any]:
    """The page's content as plain data (JSON-ready), from a fitted model.

    Parameters
    ----------
    model : TopicModel
        Fitted (or loaded). Without ``evaluation``, the information and associations are the
        model's own analysis of its training documents (``analysis_``).
    evaluation : dict, optional
        :func:`topicvae.topics.evaluation.evaluate` on documents: its information, associations,
        coherence (NPMI per topic), perplexity and, when it had labels, each topic's dominant
        label are shown instead.
    n_words, n_pairs : int
        Words per topic; associated pairs listed.
    title : str, optional
    run : dict, optional
        Facts about the run to show with the settings (e.g. report.json's corpus).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        For an unfitted model.
    """
    model._check_fitted()
    information = _information(model, evaluation)
    per_topic = information["per_topic"] if information else {}
    errors = (information or {}).get("per_topic_standard_error") or {}
    pruned = set(information["pruned_topics"]) if information else set()
    coherence = ((evaluation or {}).get("coherence") or {}).get("npmi_document")
    npmi = dict(zip(model.topic_labels(), coherence["per_topic"])) if coherence else {}
    alignment = ((evaluation or {}).get("labels") or {}).get("per_topic") or {}
    table = model.topics(n_words)
    groups = []
    for group in model.groups_:
        rows = table[table["group"] == group.name]
        topics = []
        for label, row in rows.iterrows():
            variable = label if not group.is_concrete else group.name  # a Concrete group is one variable
            topics.append({
                "label": label,
                "words": list(row["words"]),
                "mi": per_topic.get(variable),
                "mi_se": errors.get(variable),
                "active": variable not in pruned,
                "npmi": npmi.get(label),
                "dominant_label": (alignment.get(label) or {}).get("label"),
                "label_share": (alignment.get(label) or {}).get("share"),
            })
        topics.sort(key=lambda t: (not t["active"], -(t["mi"] if t["mi"] is not None else math.inf)))
        groups.append({
            "name": group.name, "kind": "Concrete" if group.is_concrete else "Gaussian", "size": group.size,
            "active": [t for t in topics if t["active"]], "pruned": [t for t in topics if not t["active"]],
        })
    settings = model._params_config()  # as trained: the defaults resolved
    settings.update({"groups": str(model.groups_), "weights": model.weights_.as_dict(),
                     "documents": model.n_documents_, "vocabulary": len(model.vocabulary_), **(run or {})})
    metrics: dict[str, Any] = {}
    if information:
        metrics["I(x; z), nats"] = information["mutual_information"]
        metrics["TC between groups"] = information["tc_between"]
        metrics["active topics"] = f"{len(information['active_topics'])} of {len(per_topic)}"
        metrics["information over documents"] = information["dataset_size"]
    if evaluation is not None:
        metrics["NPMI (document), active topics"] = coherence["mean_active_topics"] if coherence else None
        metrics["perplexity"] = evaluation["perplexity"]["corpus_level"]["value"]
        metrics["diversity (top 25)"] = evaluation["diversity"]["value"]
        if evaluation.get("labels"):
            metrics["label purity"] = evaluation["labels"]["purity"]
            metrics["label NMI"] = evaluation["labels"]["nmi"]
    if model.history_:
        last = model.history_[-1]
        metrics["final epoch"] = last.get("epoch")
        metrics["final loss (per item)"] = last.get("loss")
    return {
        "title": title or f"topicvae: {model.model} with groups {model.groups_}",
        "groups": groups,
        "correlations": _correlations(model, evaluation, n_pairs, n_words),
        "information_rule": None if not information else information.get("rule"),
        "settings": settings,
        "metrics": metrics,
        "evaluated_on": ((evaluation or {}).get("corpus") or {}).get("name"),
    }


def _short(label: str, words: dict[str, list[str]]) -> str:
    return f"{label} {' '.join(words.get(label, [])[:3])}"


def _figures(data: dict) -> dict[str, str]:
    """Plotly figures as HTML fragments; the first carries plotly.js inline."""
    import plotly.graph_objects as go

    figures: dict[str, str] = {}
    words = {t["label"]: t["words"] for g in data["groups"] for t in g["active"] + g["pruned"]}
    topics = [t for g in data["groups"] if g["kind"] == "Gaussian" for t in g["active"] + g["pruned"] if t["mi"] is not None]
    inline_library = True  # plotly.js once, in the first figure
    if topics:
        topics.sort(key=lambda t: t["mi"])
        values = [max(t["mi"], 1e-4) for t in topics]  # log scale: estimates at or below 0 drawn at its floor
        bars = go.Figure(go.Bar(
            x=values, y=[_short(t["label"], words) for t in topics], orientation="h",
            marker_color=["#1f77b4" if t["active"] else "#b0b0b0" for t in topics],
            error_x={"type": "data", "array": [2 * (t["mi_se"] or 0) for t in topics], "visible": True},
            hovertext=[f"I(x; z) = {t['mi']:.4f} nats" for t in topics], hoverinfo="text",
        ))
        bars.update_layout(
            title="I(x; z_k) per topic (blue: active, grey: pruned; bars: ±2 SE)", xaxis_type="log",
            xaxis_title="nats", height=max(320, 18 * len(topics) + 120), margin={"l": 220, "r": 20, "t": 50, "b": 40},
        )
        figures["information"] = bars.to_html(full_html=False, include_plotlyjs=inline_library, div_id="information-plot")
        inline_library = False
    correlations = data["correlations"]
    if correlations and correlations["topics"]:
        names = [_short(label, words) for label in correlations["topics"]]
        matrix = np.asarray(correlations["partial"], dtype=float)
        matrix = np.where(np.eye(len(names), dtype=bool), np.nan, matrix)  # the diagonal is 1 by definition
        heatmap = go.Figure(go.Heatmap(z=matrix, x=names, y=names, zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
                                       colorbar={"title": "partial r"}))
        heatmap.update_layout(
            title="Partial correlations between active topics (document length removed)",
            height=max(420, 22 * len(names) + 200), margin={"l": 220, "b": 220, "t": 50},
        )
        figures["correlations"] = heatmap.to_html(full_html=False, include_plotlyjs=inline_library, div_id="correlation-plot")
    return figures


def render_explorer(data: dict) -> str:
    """The page's HTML from :func:`explorer_data`'s data (Jinja2 template, Plotly figures inline)."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("topicvae.topics", "templates"), autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["nats"] = lambda value: "n/a" if value is None else f"{value:.3f}"
    environment.filters["number"] = _number
    return environment.get_template("explorer.html.j2").render(data=data, figures=_figures(data))


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_explorer(data: dict, path: str | os.PathLike) -> Path:
    """Render :func:`explorer_data`'s data and write the page to ``path`` atomically."""
    page = render_explorer(data)
    return write_file_atomically(path, lambda handle: handle.write(page.encode("utf-8")))
