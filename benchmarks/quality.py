"""Topic quality: topicvae against gensim and scikit-learn LDA, and on the ProdLDA paper's test set.

Every model is scored by the same functions (``topicvae.topics.coherence``) on the same bag-of-words,
so the differences in the tables come from the models, not from the metric code.
"""

from __future__ import annotations

import csv
import pickle
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from common import Mode, newsgroups_bow, newsgroups_ids, newsgroups_posts, newsgroups_texts, prodlda_dir, random_subset, say

TOP_WORDS = 10  # words per topic in NPMI
DIVERSITY_WORDS = 25  # words per topic in topic diversity (Dieng et al., 2020)
WINDOW = 10  # sliding window of the windowed NPMI


@dataclass
class FittedTopics:
    """What a fitted model hands to the scoring: its top words and held-out perplexities."""

    name: str
    top_words: list[list[str]]  # DIVERSITY_WORDS per topic, best first
    fit_seconds: float
    perplexity: dict  # name -> {"value", "formula"}
    settings: dict


def top_words(scores: np.ndarray, vocabulary: Sequence[str], n: int = DIVERSITY_WORDS) -> list[list[str]]:
    """The ``n`` highest-scoring words of each row of a [topics, vocabulary] matrix."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    return [[vocabulary[w] for w in row] for row in order]


def score_topics(topics: list[list[str]], reference_counts: sp.csr_matrix, reference_tokens: list[list[str]],
                 vocabulary: Sequence[str], reference_name: str) -> dict:
    """Mean NPMI (whole documents and a sliding window) and diversity, by topicvae's own metric code."""
    from topicvae.topics.coherence import document_npmi, gensim_coherence, topic_diversity

    first = [words[:TOP_WORDS] for words in topics]
    whole = document_npmi(first, reference_counts, vocabulary, top_n=TOP_WORDS, reference_name=reference_name)
    # gensim refuses top words that its reference never saw. Such a word co-occurs with nothing,
    # so it enters as a one-word document: its pairs then score NPMI's limit of -1, as they do
    # in document_npmi, instead of failing the whole evaluation.
    seen = {word for tokens in reference_tokens for word in tokens}
    missing = sorted({word for words in first for word in words} - seen)
    window = gensim_coherence(first, [*reference_tokens, *([w] for w in missing)], measure="c_npmi", top_n=TOP_WORDS,
                              window_size=WINDOW, reference_name=reference_name)
    return {
        "npmi_document": round(whole.mean, 4),
        "npmi_window": round(window.mean, 4),
        "diversity": round(topic_diversity(topics, top_n=DIVERSITY_WORDS), 4),
        "top_words_missing_from_reference": missing,
    }


# ------------------------------------------------------------------------------------------
# The contenders
# ------------------------------------------------------------------------------------------
def fit_topicvae(train: sp.csr_matrix, test: sp.csr_matrix, vocabulary: list[str], *, model: str, groups: str,
                 objective: str, epochs: int, seed: int = 0) -> FittedTopics:
    """A topicvae TopicModel fitted on the count matrix; perplexity from its test-set ELBO."""
    from topicvae import TopicModel
    from topicvae.topics.estimator import perplexity_from_elbo

    estimator = TopicModel(model, groups, objective=objective, epochs=epochs, seed=seed)
    started = time.perf_counter()
    estimator.fit(train, vocabulary=vocabulary)
    seconds = time.perf_counter() - started
    elbo = estimator.document_elbo(test, seed=seed)  # once, for both formulas
    name = f"topicvae {model} {objective} {groups}"
    # The decoder's word distribution at the posterior mean (ProdLDA: theta; NVDM: z).
    with torch.no_grad():
        point = torch.from_numpy(estimator.transform(test)).float()
        log_words = estimator.model_.eval().decode(point).double().numpy()
    return FittedTopics(
        name=name,
        top_words=estimator.topics(DIVERSITY_WORDS)["words"].tolist(),
        fit_seconds=seconds,
        perplexity={
            "corpus": {"value": perplexity_from_elbo(*elbo), "formula": "exp(sum_d -ELBO_d / sum_d N_d), one sample of z"},
            "per_document": {"value": perplexity_from_elbo(*elbo, per_document=True),
                             "formula": "exp(mean_d(-ELBO_d / N_d)), the ProdLDA code's variant"},
            "plug_in": {"value": plug_in_perplexity(log_words, test), "formula": PLUG_IN},
        },
        settings={"model": model, "groups": groups, "objective": objective, "weights": estimator.weights_.as_dict(),
                  "epochs": epochs, "batch_size": estimator.batch_size, "seed": seed},
    )


def fit_gensim_lda(train: sp.csr_matrix, test: sp.csr_matrix, vocabulary: list[str], *, topics: int, passes: int,
                   seed: int = 0) -> FittedTopics:
    """gensim's LdaModel (online variational Bayes) with its default priors."""
    from gensim.matutils import Sparse2Corpus
    from gensim.models import LdaModel

    corpus = list(Sparse2Corpus(train, documents_columns=False))
    started = time.perf_counter()
    lda = LdaModel(corpus=corpus, id2word=dict(enumerate(vocabulary)), num_topics=topics, passes=passes,
                   random_state=seed, eval_every=None)
    seconds = time.perf_counter() - started
    # log_perplexity is a per-word bound in nats (gensim's log line prints 2^-bound, which mixes bases).
    test_corpus = list(Sparse2Corpus(test, documents_columns=False))
    bound = lda.log_perplexity(test_corpus)
    theta, _ = lda.inference(test_corpus)  # variational Dirichlet parameters of each test document
    return FittedTopics(
        name=f"gensim LdaModel {topics}",
        top_words=top_words(lda.get_topics(), vocabulary),
        fit_seconds=seconds,
        perplexity={"corpus": {"value": float(np.exp(-bound)),
                               "formula": "exp(-log_perplexity(test)): gensim's per-word variational bound"},
                    "plug_in": {"value": plug_in_perplexity(_log_mixture(theta, lda.get_topics()), test), "formula": PLUG_IN}},
        settings={"num_topics": topics, "passes": passes, "alpha": "symmetric 1/K", "eta": "1/K",
                  "chunksize": 2000, "iterations": 50, "random_state": seed},
    )


def fit_sklearn_lda(train: sp.csr_matrix, test: sp.csr_matrix, vocabulary: list[str], *, topics: int,
                    iterations: int, seed: int = 0) -> FittedTopics:
    """scikit-learn's LatentDirichletAllocation (batch variational Bayes) with its default priors."""
    from sklearn.decomposition import LatentDirichletAllocation

    lda = LatentDirichletAllocation(n_components=topics, learning_method="batch", max_iter=iterations,
                                    random_state=seed, n_jobs=1)
    started = time.perf_counter()
    lda.fit(train)
    seconds = time.perf_counter() - started
    return FittedTopics(
        name=f"scikit-learn LatentDirichletAllocation {topics}",
        top_words=top_words(lda.components_, vocabulary),
        fit_seconds=seconds,
        perplexity={"corpus": {"value": float(lda.perplexity(test)),
                               "formula": "LatentDirichletAllocation.perplexity(test): exp(-bound / words)"},
                    "plug_in": {"value": plug_in_perplexity(_log_mixture(lda.transform(test), lda.components_), test),
                                "formula": PLUG_IN}},
        settings={"n_components": topics, "learning_method": "batch", "max_iter": iterations,
                  "doc_topic_prior": "1/K", "topic_word_prior": "1/K", "random_state": seed},
    )


PLUG_IN = ("exp(-sum_dw n_dw log p(w | theta_d) / sum_d N_d) with theta_d the model's point estimate for the "
           "test document itself: the same formula for every model (optimistic: theta_d has seen the words)")


def plug_in_perplexity(log_word_probabilities: np.ndarray, counts: sp.csr_matrix) -> float:
    """Perplexity of the counts under per-document word distributions, given as logs [D, V]."""
    return float(np.exp(-counts.multiply(log_word_probabilities).sum() / counts.sum()))


def _log_mixture(theta: np.ndarray, topic_word: np.ndarray) -> np.ndarray:
    """log(theta beta) for LDA: each document's word distribution is its mix of topics."""
    topic_word = topic_word / topic_word.sum(axis=1, keepdims=True)
    theta = theta / theta.sum(axis=1, keepdims=True)
    return np.log(np.maximum(theta @ topic_word, np.finfo(np.float64).tiny))


def _row(fitted: FittedTopics, scores: dict) -> dict:
    return {
        "model": fitted.name,
        "fit_seconds": round(fitted.fit_seconds, 2),
        **scores,
        "perplexity": {name: {**p, "value": round(p["value"], 1)} for name, p in fitted.perplexity.items()},
        "settings": fitted.settings,
        "topics_sample": [" ".join(words[:TOP_WORDS]) for words in fitted.top_words[:5]],
    }


def quality(mode: Mode, data: Path) -> tuple[dict, dict]:
    """topicvae ProdLDA (plain and HFVAE) against gensim and scikit-learn LDA on one bag-of-words."""
    bow = newsgroups_bow(data, mode.quality_train_documents, mode.quality_test_documents)
    tokens = bow.vectorizer.tokenize(bow.train_texts)  # reference texts of the windowed NPMI
    reference = "20 Newsgroups bydate train (stripped)"
    contenders = [
        lambda: fit_topicvae(bow.train_counts, bow.test_counts, bow.vocabulary, model="prodlda", groups="50",
                             objective="vae", epochs=mode.quality_epochs),
        lambda: fit_topicvae(bow.train_counts, bow.test_counts, bow.vocabulary, model="prodlda", groups="2x25",
                             objective="hfvae", epochs=mode.quality_epochs),
        lambda: fit_gensim_lda(bow.train_counts, bow.test_counts, bow.vocabulary, topics=50, passes=mode.gensim_passes),
        lambda: fit_sklearn_lda(bow.train_counts, bow.test_counts, bow.vocabulary, topics=50,
                                iterations=mode.sklearn_iterations),
    ]
    rows = []
    for index, fit in enumerate(contenders, start=1):
        say(f"quality: fitting contender {index} of {len(contenders)}")
        fitted = fit()
        say(f"quality: scoring {fitted.name} ({fitted.fit_seconds:.1f} s to fit)")
        rows.append(_row(fitted, score_topics(fitted.top_words, bow.train_counts, tokens, bow.vocabulary, reference)))
    settings = {
        "corpus": {"name": "20 Newsgroups bydate, headers/quotes/signatures stripped, TextVectorizer defaults",
                   **bow.describe()},
        "coherence_reference": reference,
        "npmi": f"mean over topics of the top {TOP_WORDS} words; whole-document co-occurrence (topicvae.topics.coherence."
                f"document_npmi) and gensim c_npmi with a window of {WINDOW} (topicvae.topics.coherence.gensim_coherence)",
        "diversity": f"unique share of the top {DIVERSITY_WORDS} words of all topics",
        "perplexity": "on the test documents, without the multinomial coefficient. 'corpus' and 'per_document' are "
                      "each library's variational bound (an upper bound on the true perplexity): topicvae's from one "
                      "encoder pass and one sample per document; gensim's and scikit-learn's after iterating each "
                      "document's topic proportions, and including the KL of the topic-word distributions from their "
                      "Dirichlet prior, a corpus-level term that inflates their per-word bound (more so on small test "
                      "sets). 'plug_in' is the same formula for every model: " + PLUG_IN,
        "epochs": mode.quality_epochs,
        "seeds": [0],
    }
    return settings, {"rows": rows, "npmi_gap": _npmi_gap(rows)}


def _npmi_gap(rows: list[dict]) -> dict:
    """Best topicvae mean NPMI minus the best peer's, for each NPMI variant (positive: ahead)."""
    gaps = {}
    for metric in ("npmi_document", "npmi_window"):
        ours = max(rows, key=lambda r: r[metric] if r["model"].startswith("topicvae") else -np.inf)
        peer = max(rows, key=lambda r: r[metric] if not r["model"].startswith("topicvae") else -np.inf)
        gaps[metric] = {"topicvae": ours["model"], "peer": peer["model"],
                        "difference": round(ours[metric] - peer[metric], 4)}
    return gaps


# ------------------------------------------------------------------------------------------
# The ProdLDA paper's test set
# ------------------------------------------------------------------------------------------
#: Srivastava & Sutton (2017), Table 1/2: NPMI with Lau et al.'s toolkit, and perplexity.
PUBLISHED = {
    ("ProdLDA", 50): {"npmi": 0.24, "perplexity": 1172},
    ("ProdLDA", 200): {"npmi": 0.19, "perplexity": 1168},
    ("NVDM", 50): {"npmi": None, "perplexity": 836},
}

_WORD = re.compile(r"[a-z]+")


def _lemma_candidates(word: str):
    """Crude English lemmas of a lower-case word, most likely first (no lemmatizer data offline)."""
    yield word
    if word.endswith("ies"):
        yield word[:-3] + "y"
    if word.endswith("es"):
        yield word[:-2]
    if word.endswith("s"):
        yield word[:-1]
    for suffix in ("ed", "ing"):
        if word.endswith(suffix):
            stem = word[: -len(suffix)]
            yield stem
            yield stem + "e"  # used -> use, making -> make
            if len(stem) > 2 and stem[-1] == stem[-2]:
                yield stem[:-1]  # running -> run
            if stem.endswith("i"):
                yield stem[:-1] + "y"  # tried -> try


class VocabularyMapper:
    """Maps raw text onto the paper's lemma vocabulary: each word, or its first crude lemma in it."""

    def __init__(self, vocabulary: Sequence[str]):
        self.index = {word: i for i, word in enumerate(vocabulary)}
        self._cache: dict[str, int | None] = {}

    def ids(self, text: str) -> list[int]:
        out = []
        for word in _WORD.findall(text.lower()):
            if word not in self._cache:
                self._cache[word] = next((self.index[c] for c in _lemma_candidates(word) if c in self.index), None)
            if self._cache[word] is not None:
                out.append(self._cache[word])
        return out

    def counts(self, texts: Sequence[str]) -> sp.csr_matrix:
        return ids_to_counts([self.ids(text) for text in texts], len(self.index))


def ids_to_counts(documents: Sequence[Sequence[int]], vocabulary_size: int) -> sp.csr_matrix:
    """Word-id lists to a CSR count matrix (what ``np.bincount`` per document gives, sparse)."""
    rows = np.repeat(np.arange(len(documents)), [len(d) for d in documents])
    columns = np.concatenate([np.asarray(d, dtype=np.int64) for d in documents]) if documents else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(len(columns), np.float32), (rows, columns)), shape=(len(documents), vocabulary_size))


def load_prodlda_test(folder: Path) -> tuple[list[str], list[list[str]], list[str]]:
    """The paper's vocabulary (by id), its test documents as lemma lists, and each line's bydate id."""
    with open(folder / "vocab.pkl", "rb") as handle:
        word_ids = pickle.load(handle)
    vocabulary = sorted(word_ids, key=word_ids.get)
    lines = (folder / "test.txt").read_text(encoding="latin-1").split("\n")
    documents = [line.split() for line in lines if line.strip()]
    with open(folder / "derived_test_labels.tsv", newline="") as handle:
        bydate_ids = [row["bydate_id"] for row in csv.DictReader(handle, delimiter="\t")]
    return vocabulary, documents, bydate_ids


def mapping_check(mapper: VocabularyMapper, data: Path, test_documents: list[list[str]], bydate_ids: list[str],
                  limit: int | None) -> dict:
    """How well the mapping of raw posts reproduces the paper's own test documents.

    The bydate test posts are mapped the way the training posts are, and compared line by line
    with ``test.txt`` (aligned by ``derived_test_labels.tsv``): the token ratio and the cosine
    similarity of the count vectors.
    """
    texts = newsgroups_posts(data, "test", remove=("headers",))
    position = {post: i for i, post in enumerate(newsgroups_ids(data, "test"))}
    chosen = random_subset(len(test_documents), limit)
    pairs = [(test_documents[i], texts[position[bydate_ids[i]]]) for i in chosen]
    theirs = ids_to_counts([[mapper.index[w] for w in doc] for doc, _ in pairs], len(mapper.index))
    ours = mapper.counts([text for _, text in pairs])
    dot = np.asarray(theirs.multiply(ours).sum(axis=1)).ravel()
    norms = np.sqrt(np.asarray(theirs.multiply(theirs).sum(axis=1)).ravel() * np.asarray(ours.multiply(ours).sum(axis=1)).ravel())
    cosine = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    return {
        "documents_compared": len(pairs),
        "token_ratio_ours_over_theirs": round(float(ours.sum() / theirs.sum()), 3),
        "mean_cosine": round(float(cosine.mean()), 3),
        "median_cosine": round(float(np.median(cosine)), 3),
    }


def prodlda_paper(mode: Mode, data: Path) -> tuple[dict, dict]:
    """NPMI and perplexity on the ProdLDA paper's test set, beside the published figures.

    The paper's training file is not available: the models train on the bydate training posts
    (headers removed, as the paper's test documents suggest) mapped onto its 1,995-lemma
    vocabulary by :class:`VocabularyMapper`.
    """
    folder = prodlda_dir(data)
    vocabulary, test_documents, bydate_ids = load_prodlda_test(folder)
    mapper = VocabularyMapper(vocabulary)
    say("prodlda_paper: checking the mapping of raw posts onto the paper's vocabulary")
    check = mapping_check(mapper, data, test_documents, bydate_ids, mode.quality_test_documents)
    posts = newsgroups_texts(data, "train", remove=("headers",))
    train = mapper.counts([posts[i] for i in random_subset(len(posts), mode.quality_train_documents)])
    train = train[np.diff(train.indptr) > 0]
    test_tokens = [test_documents[i] for i in random_subset(len(test_documents), mode.quality_test_documents)]
    test = ids_to_counts([[mapper.index[w] for w in doc] for doc in test_tokens], len(vocabulary))

    first = mode.paper_topics[0]
    runs = [("ProdLDA", topics, {"model": "prodlda", "groups": str(topics), "objective": "vae"}) for topics in mode.paper_topics]
    runs.append(("ProdLDA, HFVAE", first, {"model": "prodlda", "groups": f"2x{first // 2}", "objective": "hfvae"}))
    runs.append(("NVDM", first, {"model": "nvdm", "groups": str(first), "objective": "vae"}))
    rows = []
    for family, topics, options in runs:
        say(f"prodlda_paper: fitting {family} with {topics} topics")
        try:
            fitted = fit_topicvae(train, test, vocabulary, epochs=mode.paper_epochs, **options)
        except FloatingPointError as error:  # recorded as a result, so that one run cannot void the others
            say(f"prodlda_paper: {family} with {topics} topics diverged: {error}")
            rows.append({"model": f"topicvae {options['model']} {options['objective']} {options['groups']}",
                         "family": family, "topics": topics, "settings": {**options, "epochs": mode.paper_epochs},
                         "diverged": str(error), "published": PUBLISHED.get((family, topics))})
            continue
        scores = score_topics(fitted.top_words, test, test_tokens, vocabulary, "the paper's test documents")
        rows.append({**_row(fitted, scores), "family": family, "topics": topics,
                     "published": PUBLISHED.get((family, topics))})
    settings = {
        "test": {"documents": test.shape[0], "tokens": int(test.sum()), "source": "20news_prodlda/test.txt + vocab.pkl"},
        "train": {"documents": train.shape[0], "tokens": int(train.sum()),
                  "source": "bydate training posts, headers removed, mapped onto the paper's vocabulary (the "
                            "paper's train.txt.npy is missing); each word or its first crude lemma "
                            "(-s, -es, -ies, -ed, -ing rules) that is in the vocabulary, other words dropped"},
        "mapping_check_on_test_posts": check,
        "vocabulary": len(vocabulary),
        "epochs": mode.paper_epochs,
        "batch_size": next((r["settings"]["batch_size"] for r in rows if "batch_size" in r["settings"]), None),
        "coherence_reference": "the paper's test documents (whole documents, and gensim c_npmi window 10)",
        "published": "Srivastava & Sutton (2017), trained on the paper's own 11,258 training documents: NPMI by Lau et "
                     "al.'s toolkit (its reference corpus and window are the authors' script's, not reproduced here); "
                     "perplexity by the authors' code as exp(mean_d(-ELBO_d / N_d)), each test document fed alone "
                     "(a batch of one through the batch-norm layers); their code trains with dropout keep_prob 0.4 on "
                     "minibatches drawn with replacement, topicvae with dropout 0.2 on shuffled epochs. NVDM's 836 is "
                     "Miao et al.'s figure on their own 20 Newsgroups preprocessing, as the paper quotes it",
        "seeds": [0],
    }
    return settings, {"rows": rows}
