"""Export a fitted topic model to pyLDAvis (Sievert & Shirley, 2014), through the pyLDAvis package.

pyLDAvis draws topics as distributions over words mixed by per-document proportions, so it
needs, for the K topics it shows:

* ``topic_term_dists`` [K, V]: p(w | topic k), the decoder's output for topic k alone, the
  code e_k (docs/topics.md, "The rule for a topic's top words"): for ProdLDA
  softmax(BN(e_k W) + b), exactly the distribution whose order ranks the topic's words;
* ``doc_topic_dists`` [D, K]: the topic proportions theta of ``transform`` (ProdLDA: softmax of
  the posterior mean over all Gaussian topics, one simplex shared by the groups);
* the documents' lengths and the corpus's word frequencies, from the same documents.

Only ProdLDA's Gaussian topics are such a mixture. NVDM's code is a real vector, not
proportions, and a Concrete group is a simplex of its own, so they are refused (NVDM) or left
out (Concrete groups); ``topicvae report --html`` shows every model.

pyLDAvis numbers topics from 1 in the order given (``sort_topics=False``): topic i is the
model's column i - 1, labelled as ``TopicModel.topic_labels()`` (``g0:0``, ``g0:1``, ...).
The HTML page carries d3 and LDAvis's own script and style inline (from the pyLDAvis package),
so it opens without a network.
"""

from __future__ import annotations

import base64
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from topicvae.io.atomic import write_file_atomically

if TYPE_CHECKING:  # pragma: no cover
    from topicvae.topics.estimator import TopicModel

__all__ = ["PyLDAvisInput", "pyldavis_input", "prepare_pyldavis", "save_pyldavis_html"]


@dataclass(frozen=True)
class PyLDAvisInput:
    """The arguments of ``pyLDAvis.prepare``, and which model column each of the K topics is.

    ``topic_term_dists`` [K, V] and ``doc_topic_dists`` [D, K] have rows summing to 1;
    ``doc_lengths`` [D] and ``term_frequency`` [V] are word counts; ``topic_labels`` [K] are
    ``TopicModel.topic_labels()`` of the topics shown.
    """

    topic_term_dists: np.ndarray
    doc_topic_dists: np.ndarray
    doc_lengths: np.ndarray
    vocab: list[str]
    term_frequency: np.ndarray
    topic_labels: list[str]

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``pyLDAvis.prepare``."""
        return {
            "topic_term_dists": self.topic_term_dists, "doc_topic_dists": self.doc_topic_dists,
            "doc_lengths": self.doc_lengths, "vocab": self.vocab, "term_frequency": self.term_frequency,
        }


def pyldavis_input(model: TopicModel, X) -> PyLDAvisInput:
    """The matrices pyLDAvis needs, from a fitted ProdLDA model and documents X (strings or counts).

    Returns topic_term_dists [K, V] and doc_topic_dists [D', K] (rows sum to 1), doc_lengths
    [D'] and term_frequency [V] (word counts over X), and vocab [V], for the K Gaussian topics
    and the D' documents of X with at least one vocabulary word (the others have no proportions).

    Raises
    ------
    ValueError
        For an NVDM model (its code is no mixture of topics), or when no document of X has a
        vocabulary word.
    """
    import torch

    model._check_fitted()
    if model.model != "prodlda":
        raise ValueError(
            f"pyLDAvis shows topics mixed by per-document proportions, and model={model.model!r} has none "
            "(its code is a real vector): export a ProdLDA model, or use `topicvae report DIR --html` for any model"
        )
    counts = model._counts(X, fit=False)
    model._check_vocabulary_width(counts)
    lengths = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    keep = lengths > 0
    if not keep.any():
        raise ValueError("no document of X has a word of the model's vocabulary: pyLDAvis needs at least one")
    gaussian = model.groups_.gaussian_columns()
    with warnings.catch_warnings():  # empty documents are left out just below
        warnings.simplefilter("ignore")
        theta = model.transform(counts[keep])[:, gaussian]
    network = model.model_.eval()
    with torch.no_grad():
        codes = torch.eye(model.groups_.num_columns, device=next(network.parameters()).device)[gaussian]
        topic_term = network.decode(codes).double().exp().cpu().numpy()
    # pyLDAvis checks that rows sum to 1 within 1e-3; float32 softmaxes are renormalized in float64
    topic_term /= topic_term.sum(axis=1, keepdims=True)
    theta = theta / theta.sum(axis=1, keepdims=True)
    labels = [model.topic_labels()[column] for column in gaussian]
    return PyLDAvisInput(
        topic_term_dists=topic_term,
        doc_topic_dists=theta,
        doc_lengths=lengths[keep],
        vocab=list(model.vocabulary_),
        term_frequency=np.asarray(counts.sum(axis=0), dtype=np.float64).ravel(),
        topic_labels=labels,
    )


def prepare_pyldavis(model: TopicModel, X, **options):
    """``pyLDAvis.prepare`` on :func:`pyldavis_input`, topics in the model's order (``sort_topics=False``).

    ``options`` go to ``pyLDAvis.prepare`` (``R``, ``lambda_step``, ``mds``, ``n_jobs``, ...);
    ``n_jobs`` defaults to 1 (pyLDAvis's default, all cores through joblib, is slower on small
    models than one process). Returns pyLDAvis's ``PreparedData``.
    """
    try:
        import pyLDAvis
    except ImportError:  # pragma: no cover - a dependency; named for a broken install
        raise ImportError("pyLDAvis is not installed: pip install pyLDAvis") from None
    arguments = pyldavis_input(model, X).arguments()
    options = {"sort_topics": False, "n_jobs": 1, **options}
    return pyLDAvis.prepare(**arguments, **options)


def _data_uri(path: str | os.PathLike, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


class _ScriptSafe:
    """``prepared`` whose JSON cannot end the page's <script> element.

    pyLDAvis writes ``to_json()`` raw inside a <script>: a vocabulary word such as
    ``</script><script>...`` (a token pattern like ``\\S+`` keeps one) would run as script.
    ``<``, ``>`` and ``&`` become JSON's ``\\u003c``, ``\\u003e``, ``\\u0026`` escapes, which
    parse to the same strings.
    """

    def __init__(self, prepared):
        self._prepared = prepared

    def to_json(self) -> str:
        return self._prepared.to_json().replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")

    def __getattr__(self, name):
        return getattr(self._prepared, name)


def save_pyldavis_html(prepared, path: str | os.PathLike) -> Path:
    """Write pyLDAvis's page for ``prepared`` to ``path``, atomically, with its scripts inline (no network)."""
    import pyLDAvis
    from pyLDAvis import urls

    html = pyLDAvis.prepared_data_to_html(
        _ScriptSafe(prepared),
        d3_url=_data_uri(urls.D3_LOCAL, "text/javascript"),
        ldavis_url=_data_uri(urls.LDAVIS_LOCAL, "text/javascript"),
        ldavis_css_url=_data_uri(urls.LDAVIS_CSS_LOCAL, "text/css"),
        template_type="simple",
        visid="topicvae_ldavis",
    )
    return write_file_atomically(path, lambda handle: handle.write(html.encode("utf-8")))
