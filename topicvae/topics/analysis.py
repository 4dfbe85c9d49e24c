"""Analysis of a trained topic model, as pure functions: means and variances in, numbers and
matrices out (``TopicModel`` only calls them). The information quantities and the pruning rule,
which images share, are :mod:`topicvae.objective.information`.

* Associations between active topics (``topic_correlations``: partial correlations under q(z),
  document length partialled out, a permutation null; docs/topics.md).
* Whether ``transform`` agrees with the topics' words (``transform_agreement``), and how topics
  line up with document labels (``label_alignment``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from topicvae.objective.information import InformationReport, Pruning

__all__ = [
    "CodeMoments", "correlation_under_q", "TopicAgreement", "transform_agreement", "TopicCorrelations", "topic_correlations", "LabelAlignment", "label_alignment",
    "TopicAnalysis", "plot_correlation",
]


def plot_correlation(correlation: np.ndarray, labels: Sequence[str], path, *, null: np.ndarray | None = None, threshold: float | None = None) -> None:
    """Heatmap of the associations between topics; with ``threshold``, pairs beyond it are outlined
    and, with ``null``, each cell is annotated with the pair's null quantile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(5, 0.3 * len(labels))
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(correlation, cmap="RdBu_r", vmin=-1, vmax=1)
    if threshold is not None:
        for i, j in zip(*np.nonzero(np.abs(correlation) > threshold)):
            if i != j:
                axes.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.2))
    if null is not None and len(labels) <= 30:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if i != j:
                    axes.text(j, i, f"{null[i, j]:.2f}", ha="center", va="center", fontsize=4, color="dimgray")
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    axes.set_yticks(range(len(labels)), labels, fontsize=6)
    title = "Partial correlation between active topics under q(z)"
    if threshold is not None:
        title += f"\noutlined: beyond the permutation null ({threshold:.3f}); cell text: the pair's null quantile"
    axes.set_title(title, fontsize=8)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


@dataclass(frozen=True)
class TopicAgreement:
    """How well each topic's document weights follow its own words (``transform_agreement``).

    Attributes
    ----------
    word_share : numpy.ndarray
        Per topic, the Pearson correlation over documents between the topic's weight theta_k
        and the share of the document's tokens that are among the topic's top words, [K].
    log_length : numpy.ndarray
        Per topic, the correlation between theta_k and the document's log length, [K].
    documents : int
        Documents with at least one vocabulary word, over which both are computed.
    """

    word_share: np.ndarray
    log_length: np.ndarray
    documents: int


def _column_correlation(matrix: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``matrix`` [N, K] with the matching column of ``other``
    (or with ``other`` itself when it is one column [N]); 0 where either column is constant."""
    other = other if other.ndim == 2 else np.repeat(other[:, None], matrix.shape[1], axis=1)
    a = matrix - matrix.mean(0)
    b = other - other.mean(0)
    denominator = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(0) / denominator, 0.0)


def transform_agreement(theta: np.ndarray, counts, top_word_ids: Sequence[Sequence[int]]) -> TopicAgreement:
    """Do the document-topic weights agree with the topics' words?

    Parameters
    ----------
    theta : numpy.ndarray, [N, K]
        Document-topic weights (``TopicModel.transform``), one column per topic.
    counts : sparse or dense matrix, [N, V]
        The same documents' word counts.
    top_word_ids : sequence of K sequences of int
        Each topic's top words as vocabulary column indices.

    A topic's weight should rise with the share of its own top words in the document (LDA's
    reach on 20 Newsgroups: median 0.52, none below 0.2) and should not follow the document's
    length, which is no theme. Documents without vocabulary words are left out.
    """
    import scipy.sparse as sp

    counts = sp.csr_matrix(counts, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    if theta.shape[0] != counts.shape[0] or theta.shape[1] != len(top_word_ids):
        raise ValueError(
            f"theta has shape {theta.shape} but counts have {counts.shape[0]} documents and "
            f"{len(top_word_ids)} topics have top words: pass the same documents and topics"
        )
    lengths = np.asarray(counts.sum(1)).ravel()
    keep = lengths > 0
    counts, theta, lengths = counts[keep], theta[keep], lengths[keep]
    shares = np.column_stack([np.asarray(counts[:, list(ids)].sum(1)).ravel() / lengths for ids in top_word_ids])
    return TopicAgreement(
        word_share=_column_correlation(theta, shares),
        log_length=_column_correlation(theta, np.log(lengths)),
        documents=int(keep.sum()),
    )


# ---------------------------------------------------------------------------------------------
# Correlations between topics: direct associations, with document length removed, against a null
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeMoments:
    """Sums over documents of what the correlation under q(z) needs: the posterior means, their
    outer products and the posterior variances. Sums add over batches, shards and processes
    (``+``, or a sum of :meth:`as_vector` over ranks), so every document counts once.

    Attributes
    ----------
    count : int
        Documents summed.
    total : numpy.ndarray
        sum_n mu_n, [K].
    outer : numpy.ndarray
        sum_n mu_n mu_n^T, [K, K].
    variance : numpy.ndarray
        sum_n diag Cov(q(z | x_n)), [K] (mean-field posteriors: the diagonal is all there is).
    """

    count: int
    total: np.ndarray
    outer: np.ndarray
    variance: np.ndarray

    @classmethod
    def of(cls, means: np.ndarray, variances: np.ndarray) -> CodeMoments:
        """The moments of N documents' posterior means and variances, [N, K] each (float64 sums)."""
        means, variances = np.asarray(means, dtype=np.float64), np.asarray(variances, dtype=np.float64)
        return cls(means.shape[0], means.sum(0), means.T @ means, variances.sum(0))

    @classmethod
    def zero(cls, size: int) -> CodeMoments:
        return cls(0, np.zeros(size), np.zeros((size, size)), np.zeros(size))

    def __add__(self, other: CodeMoments) -> CodeMoments:
        return CodeMoments(self.count + other.count, self.total + other.total, self.outer + other.outer, self.variance + other.variance)

    def as_vector(self) -> np.ndarray:
        """Every sum in one float64 vector [1 + K + K^2 + K], to be summed over processes."""
        return np.concatenate([[float(self.count)], self.total, self.outer.ravel(), self.variance])

    @classmethod
    def from_vector(cls, vector, size: int) -> CodeMoments:
        vector = np.asarray(vector, dtype=np.float64)
        k = size  # the vector is [count, total (k), outer (k * k), variance (k)]
        return cls(int(round(vector[0])), vector[1 : 1 + k], vector[1 + k : 1 + k + k * k].reshape(k, k), vector[1 + k + k * k :])


def correlation_under_q(moments: CodeMoments) -> np.ndarray:
    """Correlation between code columns under the inference marginal q(z) = mean_n q(z | x_n), [K, K].

    By the law of total covariance, Cov_q(z) = Cov_n(mean of q(z | x_n)) + mean_n Cov(q(z | x_n)),
    and the mean-field posterior adds only to the diagonal. The second term matters: a topic
    the encoder does not use keeps a posterior close to the prior, whose variance then
    dominates and shrinks its correlations towards 0, while the means alone (rescaled by the
    encoder's batch-norm) would correlate it with everything. The covariance of the means is
    the unbiased sample covariance (as ``numpy.cov``). A column of zero variance correlates 0.

    Raises
    ------
    ValueError
        Fewer than 2 documents.
    """
    count = moments.count
    if count < 2:
        raise ValueError(
            f"X holds {count} document{'s' if count != 1 else ''} with words of the model's vocabulary: a correlation "
            "needs at least 2; pass more documents"
        )
    mean = moments.total / count
    covariance = (moments.outer - count * np.outer(mean, mean)) / (count - 1)
    covariance[np.diag_indices_from(covariance)] += moments.variance / count
    scale = np.sqrt(np.diag(covariance))
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = covariance / np.outer(scale, scale)
    return np.nan_to_num(correlation, nan=0.0)


@dataclass(frozen=True)
class TopicCorrelations:
    """Associations between topics under q(z) (``topic_correlations``); indices refer to ``topics``.

    Attributes
    ----------
    topics : numpy.ndarray
        The topics analysed (column indices of the code), [A].
    correlation : numpy.ndarray
        Their correlation under q(z) with document length partialled out, [A, A].
    partial : numpy.ndarray
        The partial correlations: each pair's association given all other analysed topics
        (what is left after a factor they share with the rest), [A, A], 1 on the diagonal.
    null_quantile : numpy.ndarray
        Per pair, the (1 - level) quantile of |partial| over permutations of the documents
        done separately for every topic (which destroys co-occurrence and keeps each topic's
        distribution), [A, A].
    threshold : float
        The (1 - level) quantile of the largest |partial| over all pairs under the same
        permutations: a pair above it is significant with family-wise error ``level``.
    level : float
    n_documents : int
    n_permutations : int
    shrinkage : float
        The graphical lasso's penalty on the correlation matrix.
    """

    topics: np.ndarray
    correlation: np.ndarray
    partial: np.ndarray
    null_quantile: np.ndarray
    threshold: float
    level: float
    n_documents: int
    n_permutations: int
    shrinkage: float

    def significant(self) -> np.ndarray:
        """Boolean [A, A]: pairs whose |partial| exceeds the family-wise null threshold.

        A threshold of 0 (every permutation gave all partial correlations 0, as the graphical
        lasso does when the topics barely vary against their posterior noise) calibrates
        nothing: then no pair is called significant.
        """
        mask = np.abs(self.partial) > self.threshold if self.threshold > 0 else np.zeros(self.partial.shape, dtype=bool)
        np.fill_diagonal(mask, False)
        return mask


def _partial_out(means: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    """The residuals of an ordinary least-squares fit of the means on the covariates and an intercept."""
    design = np.column_stack([np.ones(len(means)), covariates])
    coefficients, *_ = np.linalg.lstsq(design, means, rcond=None)
    return means - design @ coefficients


def _correlation_under_q(residuals: np.ndarray, mean_variance: np.ndarray) -> np.ndarray:
    """Correlation under q(z) from the means' residuals and the mean posterior variance.

    Cov_q(z) = Cov_n(E[z | x_n]) + mean_n Var(z | x_n) (the law of total covariance; the
    mean-field posterior adds to the diagonal only), with the maximum-likelihood covariance of
    the residuals (divided by N), so that repeating every document leaves it unchanged.
    """
    centred = residuals - residuals.mean(0)
    covariance = centred.T @ centred / len(residuals)
    covariance[np.diag_indices_from(covariance)] += mean_variance
    scale = np.sqrt(np.diag(covariance))
    scale[scale == 0] = 1.0
    return covariance / np.outer(scale, scale)


def _partial_correlation(correlation: np.ndarray, shrinkage: float) -> np.ndarray:
    """Partial correlations from the graphical lasso's precision matrix (scikit-learn)."""
    from sklearn.covariance import graphical_lasso

    if correlation.shape[0] < 2:
        return np.ones_like(correlation)
    if shrinkage > 0:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            try:
                _, precision = graphical_lasso(correlation, alpha=shrinkage, max_iter=200)
            except (ConvergenceWarning, FloatingPointError):
                # a nearly singular matrix (topics that move together exactly): the penalty's
                # ridge counterpart is a well-defined inverse
                precision = np.linalg.pinv(correlation + shrinkage * np.eye(len(correlation)))
    else:
        precision = np.linalg.pinv(correlation)
    diagonal = np.sqrt(np.diag(precision))
    partial = -precision / np.outer(diagonal, diagonal)
    np.fill_diagonal(partial, 1.0)
    return partial


def topic_correlations(
    means: np.ndarray,
    variances: np.ndarray,
    *,
    topics: Sequence[int] | None = None,
    log_length: np.ndarray | None = None,
    shrinkage: float = 0.01,
    n_permutations: int = 200,
    level: float = 0.01,
    seed: int = 0,
) -> TopicCorrelations:
    """Direct associations between topics, free of document length, with a permutation null.

    Parameters
    ----------
    means, variances : numpy.ndarray, [N, K]
        Each document's posterior mean and variance of every latent column (ProdLDA: the
        Gaussian topic logits, which the Laplace-Dirichlet prior identifies; NVDM: z).
    topics : sequence of int, optional
        The columns to analyse: the active topics (a pruned topic's posterior is its prior and
        has nothing to correlate). Default: all.
    log_length : numpy.ndarray, [N], optional
        log of each document's word count, partialled out of the means: a longer document
        moves every topic's posterior, a factor that is no theme.
    shrinkage : float
        The graphical lasso's penalty (``sklearn.covariance.graphical_lasso``) on the
        correlation matrix; 0 inverts it as it is.
    n_permutations, level, seed
        The null: each topic's column is permuted over the documents on its own,
        ``n_permutations`` times with a generator seeded by ``seed``, and the whole analysis
        repeated; per pair the (1 - level) quantile of |partial|, and over all pairs the
        (1 - level) quantile of the largest |partial| (a family-wise threshold).

    Both the correlation and the null use the maximum-likelihood covariance, so repeating every
    document changes neither the correlations nor, up to the permutations, their null.
    """
    means = np.asarray(means, dtype=np.float64)
    variances = np.asarray(variances, dtype=np.float64)
    if means.ndim != 2 or means.shape != variances.shape:
        raise ValueError(f"means {means.shape} and variances {variances.shape} must both be [documents, topics]")
    n_documents = means.shape[0]
    if n_documents < 3:
        raise ValueError(f"{n_documents} documents are too few for correlations: give at least 3")
    chosen = np.arange(means.shape[1]) if topics is None else np.asarray(list(topics), dtype=int)
    if not (0 < n_permutations and 0 < level < 1 and shrinkage >= 0):
        raise ValueError(
            f"n_permutations={n_permutations!r}, level={level!r} or shrinkage={shrinkage!r} is invalid: "
            "give n_permutations >= 1, 0 < level < 1 and shrinkage >= 0"
        )
    covariates = np.zeros((n_documents, 0)) if log_length is None else np.asarray(log_length, dtype=np.float64).reshape(n_documents, -1)
    residuals, sub_variance = _partial_out(means[:, chosen], covariates), variances[:, chosen].mean(0)
    correlation = _correlation_under_q(residuals, sub_variance)
    partial = _partial_correlation(correlation, shrinkage)
    size = len(chosen)
    null = np.zeros((n_permutations, size, size))
    if size >= 2:
        rng = np.random.default_rng(seed)
        for p in range(n_permutations):
            # each topic's residuals on their own: co-occurrence goes, every topic's distribution stays
            order = np.argsort(rng.random((n_documents, size)), axis=0)
            shuffled = np.take_along_axis(residuals, order, axis=0)
            null[p] = np.abs(_partial_correlation(_correlation_under_q(shuffled, sub_variance), shrinkage))
    off_diagonal = ~np.eye(size, dtype=bool)
    largest = np.array([m[off_diagonal].max() if size >= 2 else 0.0 for m in null])
    quantile = np.quantile(null, 1 - level, axis=0) if size else np.zeros((0, 0))
    np.fill_diagonal(quantile, 0.0)
    return TopicCorrelations(
        topics=chosen,
        correlation=correlation,
        partial=partial,
        null_quantile=quantile,
        threshold=float(np.quantile(largest, 1 - level)),
        level=level,
        n_documents=n_documents,
        n_permutations=n_permutations,
        shrinkage=shrinkage,
    )


# ---------------------------------------------------------------------------------------------
# Topics against document labels (newsgroups, categories): an outside check
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelAlignment:
    """How the topics line up with document labels the model never saw (``label_alignment``).

    Attributes
    ----------
    dominant_label : list of str
        Per topic, the label that holds the largest share of the topic's weight over documents.
    dominant_share : numpy.ndarray
        That share, [K]: sum of theta_k over the label's documents / sum of theta_k.
    purity : float
        Each document assigned to its top topic; the share of documents whose label is the
        most frequent one of their topic's documents.
    nmi : float
        Normalized mutual information between the documents' top topics and their labels
        (``sklearn.metrics.normalized_mutual_info_score``, arithmetic mean).
    documents : int
    """

    dominant_label: list
    dominant_share: np.ndarray
    purity: float
    nmi: float
    documents: int


def label_alignment(theta: np.ndarray, labels: Sequence, *, topics: Sequence[int] | None = None) -> LabelAlignment:
    """Each topic's dominant label, and purity and NMI of the documents' top topics.

    Parameters
    ----------
    theta : numpy.ndarray, [N, K]
        Document-topic weights (``TopicModel.transform``), non-negative.
    labels : sequence of N labels
        One label per document (a newsgroup, a category).
    topics : sequence of int, optional
        The topics a document's top topic is chosen from (the active ones); all by default.
        Dominant labels are given for every topic.
    """
    from sklearn.metrics import normalized_mutual_info_score
    from sklearn.metrics.cluster import contingency_matrix

    theta = np.asarray(theta, dtype=np.float64)
    labels = np.asarray([str(label) for label in labels])
    if theta.ndim != 2 or theta.shape[0] != len(labels):
        raise ValueError(f"theta has shape {theta.shape} but {len(labels)} labels were given: give one label per document")
    if len(labels) == 0:
        raise ValueError("no documents: give at least one document and its label")
    if (theta < 0).any():
        raise ValueError("theta holds negative weights: pass topic proportions (ProdLDA's transform)")
    names, codes = np.unique(labels, return_inverse=True)
    mass = np.zeros((len(names), theta.shape[1]))
    np.add.at(mass, codes, theta)
    totals = mass.sum(0)
    dominant = mass.argmax(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals > 0, mass[dominant, np.arange(theta.shape[1])] / totals, 0.0)
    chosen = np.arange(theta.shape[1]) if topics is None else np.asarray(list(topics), dtype=int)
    top = chosen[theta[:, chosen].argmax(1)]
    table = contingency_matrix(codes, top)
    return LabelAlignment(
        dominant_label=[str(names[i]) for i in dominant],
        dominant_share=share,
        purity=float(table.max(0).sum() / len(labels)),
        nmi=float(normalized_mutual_info_score(codes, top)),
        documents=len(labels),
    )


# ---------------------------------------------------------------------------------------------
# The whole analysis of a fitted model, as one record
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicAnalysis:
    """Which topics are active, and how the active topics of different groups associate.

    Attributes
    ----------
    information : InformationReport
        Over the analysed documents (``information.dataset_size`` of them).
    pruning : Pruning
        Over the latent variables (a Gaussian topic, or a whole Concrete group).
    correlations : TopicCorrelations
        Between the active Gaussian topics; ``correlations.topics`` are code columns.
    variable_labels : list of str
        The label of each latent variable (``GroupSpec.variable_labels``).
    """

    information: InformationReport
    pruning: Pruning
    correlations: TopicCorrelations
    variable_labels: list

    def active_labels(self) -> list[str]:
        return [label for label, on in zip(self.variable_labels, self.pruning.active) if on]

    def pruned_labels(self) -> list[str]:
        return [label for label, on in zip(self.variable_labels, self.pruning.active) if not on]

    def to_dict(self) -> dict:
        """JSON-ready (config.json, report.json)."""
        info, pruning, corr = self.information, self.pruning, self.correlations
        return {
            "information": {
                "dataset_size": info.dataset_size,
                "mutual_information": info.mutual_information,
                "per_group": info.per_group.tolist(),
                "per_variable": info.per_variable.tolist(),
                "per_variable_se": None if info.per_variable_se is None else info.per_variable_se.tolist(),
                "tc_between": info.tc_between,
                "tc_within": info.tc_within.tolist(),
            },
            "pruning": {
                "active": pruning.active.tolist(), "gap": pruning.gap, "largest_ratio": pruning.largest_ratio,
                "noise": pruning.noise.tolist(), "rule": pruning.rule, "threshold": pruning.threshold,
            },
            "correlations": {
                "topics": corr.topics.tolist(), "correlation": corr.correlation.tolist(), "partial": corr.partial.tolist(),
                "null_quantile": corr.null_quantile.tolist(), "threshold": corr.threshold, "level": corr.level,
                "n_documents": corr.n_documents, "n_permutations": corr.n_permutations, "shrinkage": corr.shrinkage,
            },
            "variable_labels": list(self.variable_labels),
        }

    @classmethod
    def from_dict(cls, data: dict) -> TopicAnalysis:
        info, pruning, corr = data["information"], data["pruning"], data["correlations"]
        array = lambda values: np.asarray(values, dtype=np.float64)  # noqa: E731
        size = len(corr["topics"])
        square = lambda values: array(values).reshape(size, size)  # noqa: E731
        return cls(
            information=InformationReport(
                dataset_size=int(info["dataset_size"]), mutual_information=float(info["mutual_information"]),
                per_group=array(info["per_group"]), per_variable=array(info["per_variable"]),
                tc_between=float(info["tc_between"]), tc_within=array(info["tc_within"]),
                per_variable_se=None if info["per_variable_se"] is None else array(info["per_variable_se"]),
            ),
            pruning=Pruning(
                active=np.asarray(pruning["active"], dtype=bool), gap=pruning["gap"], largest_ratio=float(pruning["largest_ratio"]),
                noise=array(pruning["noise"]), rule=str(pruning["rule"]), threshold=pruning.get("threshold"),
            ),
            correlations=TopicCorrelations(
                topics=np.asarray(corr["topics"], dtype=int), correlation=square(corr["correlation"]),
                partial=square(corr["partial"]), null_quantile=square(corr["null_quantile"]),
                threshold=float(corr["threshold"]), level=float(corr["level"]), n_documents=int(corr["n_documents"]),
                n_permutations=int(corr["n_permutations"]), shrinkage=float(corr["shrinkage"]),
            ),
            variable_labels=list(data["variable_labels"]),
        )
