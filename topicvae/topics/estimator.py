"""``TopicModel``: the scikit-learn-style estimator around the models, objective and training loop."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import numbers
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import validate_data

from topicvae.io.model_files import (
    CONFIG_FILE, FORMAT_VERSION, RESTORE_ADVICE, ModelFileError, interpreting_config, load_weights, package_version, plain, read_config,
    write_model_directory,
)
from topicvae.latent.groups import GroupSpec
from topicvae.latent.posteriors import POSTERIOR_NORMS
from topicvae.objective.information import InformationReport, encoder_information
from topicvae.objective.terms import ObjectiveWeights, item_elbo
from topicvae.text.shards import ShardedBagOfWords
from topicvae.text.vectorizer import DegenerateCorpusWarning, TextVectorizer, unsegmented_text
from topicvae.topics.analysis import CodeMoments, LabelAlignment, TopicAnalysis, correlation_under_q, label_alignment, topic_correlations
from topicvae.topics.models import ENCODER_INPUTS, MODEL_DEFAULTS, PRODLDA_ARCHITECTURE, NeuralTopicModel, build_model
from topicvae.topics.source import BagOfWordsSource
from topicvae.training.distributed import ProcessGroup, current_process_group, gather_objects, resolve_device, sum_over_ranks
from topicvae.training.loop import TrainingProgress, LR_SCHEDULES, check_seed, check_training_options, train
from topicvae.training.checkpoints import TrainingCheckpoints, check_checkpoint_options
from topicvae.utils.random_state import RandomStreams, seeded

__all__ = ["TopicModel", "ModelFileError", "EmptyDocumentWarning", "DegenerateCorpusWarning", "FORMAT_VERSION"]


class EmptyDocumentWarning(UserWarning):
    """Documents without any word of the model's vocabulary were given: they get no representation."""


VOCABULARY_FILE = "vocabulary.txt"

#: Two topics that share at least this many of their top 10 words are one theme learned twice
#: (reported as a duplicate), whatever their correlation.
DUPLICATE_SHARED_WORDS = 3

#: At most this many training documents (drawn at random) enter the analysis at the end of
#: ``fit``: the information estimate costs O(N^2).
ANALYSIS_DOCUMENTS = 5000

#: The architecture and schedule of models saved before these options existed (config.json
#: without them): every such model trained without a warm-up of gamma.
LEGACY_ARCHITECTURE = {
    "prodlda": {"encoder_input": "counts", "posterior_norm": "none", "word_shift": False, "init": "default", "lr_schedule": "constant", "gamma_warmup": 0.0, "topic_dropout": None},
    "nvdm": {"encoder_input": "counts", "posterior_norm": None, "word_shift": None, "init": None, "lr_schedule": "constant", "gamma_warmup": 0.0, "topic_dropout": None},
}


#: The precisions of TopicModel(precision=...). "auto" is bfloat16 mixed precision on GPUs that
#: support it and float32 elsewhere: on CPUs bfloat16 matrix products are rarely faster.
PRECISIONS = ("auto", "float32", "bfloat16")


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype of the model's mixed-precision forward pass, or None for float32 throughout."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is invalid: use {', '.join(map(repr, PRECISIONS))}")
    if precision == "float32":
        return None
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return torch.bfloat16


def _warmup_schedule(weights: ObjectiveWeights, share: float):
    """The weights of each step under a warm-up of gamma (``TopicModel(gamma_warmup=share)``), or
    None when every step takes ``weights``."""
    if share <= 0.0 or weights.gamma == 1.0:
        return None
    warming = dataclasses.replace(weights, gamma=1.0)
    return lambda progress: warming if progress < share else weights


def _check_choice(name: str, value, choices: Sequence[str]) -> None:
    if value is not None and value not in choices:
        raise ValueError(f"{name}={value!r} is unknown: choose one of {', '.join(map(repr, choices))}, or None for the default")


def perplexity_from_elbo(elbo: np.ndarray, lengths: np.ndarray, *, per_document: bool = False) -> float:
    """exp(sum_d -ELBO_d / sum_d N_d), or exp(mean_d(-ELBO_d / N_d)) with ``per_document``.

    Documents without any vocabulary word (N_d = 0) are left out of both.
    """
    keep = lengths > 0
    if not keep.any():
        raise ValueError("no document has a word of the model's vocabulary: perplexity is undefined")
    if per_document:
        return float(np.exp(np.mean(-elbo[keep] / lengths[keep])))
    return float(np.exp(-elbo[keep].sum() / lengths[keep].sum()))


def _read_saved_vocabulary(path: Path) -> list[str]:
    """The words of a saved model's vocabulary.txt, one per line; a damaged file is named as such."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ModelFileError(
            f"{path} is damaged (not UTF-8 text: {error.reason} at byte {error.start}): {RESTORE_ADVICE}"
        ) from None
    words = text.split("\n")[:-1]
    if not words:
        raise ModelFileError(f"{path} is empty (an interrupted copy or a full disk): {RESTORE_ADVICE}")
    return words


def _as_documents(X) -> list | None:
    """X as a list of documents when it holds text (a list, tuple, Series or 1-D array of
    strings, or any other iterable of them), or None when it is a matrix of counts."""
    if hasattr(X, "columns") and hasattr(X, "dtypes"):  # a DataFrame: counts, unless it holds text
        text = [str(column) for column, kind in zip(X.columns, X.dtypes) if kind == object or str(kind) in ("string", "str")]
        if text:
            raise ValueError(
                f"X is a table with text in column(s) {', '.join(text)}: pass the documents as one column, "
                f"e.g. X[{text[0]!r}] (a DataFrame is read as word counts, one column per word)"
            )
        return None
    if sp.issparse(X) or isinstance(X, torch.Tensor):
        return None
    if not isinstance(X, (list, tuple)) and not hasattr(X, "__array__"):
        if not isinstance(X, Iterable):
            raise ValueError(f"X of type {type(X).__name__} is invalid: pass a list of documents or a count matrix")
        return list(X)  # a generator or stream of documents
    if isinstance(X, (list, tuple)):
        if X and all(isinstance(item, (list, tuple)) and item and all(isinstance(t, str) for t in item) for item in X[:100]):
            raise ValueError(
                "X holds lists of tokens (pre-tokenized documents): join each document's tokens with spaces, "
                "[' '.join(tokens) for tokens in X]; the token pattern then finds them"
            )
        return list(X) if not X or any(isinstance(item, str) for item in X) else None
    values = np.asarray(X)
    if values.dtype.kind in "OUS" and values.ndim == 1:
        return list(values)
    if values.dtype.kind in "US" or (values.dtype.kind == "O" and values.size and isinstance(values.flat[0], str)):
        raise ValueError(
            f"X is a {values.ndim}-D array of text: pass the documents as a list (or a pandas Series) of strings, "
            "e.g. X[:, 0] for one column of text"
        )
    return None


class TopicModel(TransformerMixin, BaseEstimator):
    """A neural topic model (ProdLDA or NVDM) with grouped latent topics, trained with HFVAE.

    Parameters
    ----------
    model : {"prodlda", "nvdm"}
    groups : str or GroupSpec
        How the topics are split into groups, e.g. ``"2x25"`` (see :mod:`topicvae.latent.groups`).
    objective : {"hfvae", "vae", "beta-vae", "beta-tcvae"}
        A preset of the objective's weights; ``alpha``, ``beta``, ``gamma``, ``delta`` override
        the weights the preset lets you set (see :meth:`ObjectiveWeights.preset`).
    alpha, beta, gamma, delta : float, optional
        Weights of I(x; z), the TC between groups, the TC within groups and the dimension-wise
        KL. For ``hfvae`` the defaults are 1, 0.1, 4 and 1 (the paper's 20 Newsgroups setting).
    epochs : int
        Passes over the corpus.
    batch_size : int, optional
        Documents per step, also the sample from which the objective estimates the inference
        marginals q(z); defaults to 64 for ProdLDA and 200 for NVDM (each measured best on 20
        Newsgroups, docs/analysis.md).
    lr : float, optional
        Adam's learning rate; defaults to 2e-3 (ProdLDA, with beta1 = 0.99) or 5e-4 (NVDM).
    hidden_sizes : sequence of int, optional
        Encoder layers; defaults to (100, 100) for ProdLDA and (500,) for NVDM.
    dropout : float, optional
        Dropout in the encoder (and, for ProdLDA, on theta unless ``topic_dropout`` says
        otherwise); defaults to 0.2 for ProdLDA, 0 for NVDM.
    prior_concentration : float
        ProdLDA's Dirichlet concentration a (the same for every topic).
    temperature : float
        Temperature of Concrete groups.
    encoder_input : {"counts", "log1p", "frequencies"}, optional
        What the encoder reads: raw counts, log(1 + counts) or word frequencies (counts over
        the document's length). Default: see ``MODEL_DEFAULTS`` and docs/topics.md.
    posterior_norm : {"shift", "affine", "none", "off"}, optional
        ProdLDA only: the learned parameters of the batch-norms on the posterior's mean and
        log-variance. ``"shift"`` (the original's) and ``"none"`` force every topic's mean to
        vary over the batch, so no topic can be pruned; ``"affine"`` (a scale and a shift) and
        ``"off"`` (no batch-norm, the plain VAE's encoder) let a topic's posterior collapse to
        the prior. Pruning needs ``dropout=0`` as well: dropout on theta rewards copies of a
        topic (docs/analysis.md, "What keeps every topic on").
    topic_dropout : float, optional
        ProdLDA only: dropout on the topic proportions theta before the decoder; defaults to
        ``dropout`` (the original's). Dropout there rewards learning a theme twice and keeps
        spare topics from being pruned (docs/analysis.md, "What keeps every topic on").
    word_shift : bool, optional
        ProdLDA only: a learned per-word shift after the decoder's batch-norm (the original's).
    init : {"default", "xavier"}, optional
        ProdLDA only: PyTorch's default initialization or the original's Xavier/Glorot.
    gamma_warmup : float, optional
        The share of training, in [0, 1), during which the within-group total correlation is
        weighed as in the ELBO (gamma = 1) before ``gamma`` takes over; 0 weighs it by ``gamma``
        from the first step. Under a strong gamma, a group's dimensions are pushed apart before
        any theme has formed, and the factor that moves every topic's posterior together (how
        much a post says) takes a topic of its own; a warm-up lets the themes form first
        (docs/analysis.md, "A warm-up of gamma"). Defaults to 0.5 for ProdLDA and 0 for NVDM
        with ``objective="hfvae"``; the other presets tie gamma to their other weights and take
        no warm-up (a nonzero one raises ValueError).
    lr_schedule : {"constant", "cosine"}
        The learning rate over training: constant, or decayed to 0 along a half cosine.
    vectorizer : TextVectorizer, optional
        How raw documents become counts; a default ``TextVectorizer()`` when omitted.
    seed : int
        Seeds Python, NumPy and torch, and the order of the batches.
    device : str
        "auto" (a GPU when there is one), "cpu", "cuda" or "cuda:K". In data-parallel training
        on GPUs each process takes the GPU of its LOCAL_RANK.
    precision : {"auto", "float32", "bfloat16"}
        The model's forward pass in bfloat16 mixed precision ("auto": on GPUs that support
        it). The objective's pairwise log-densities are always computed in float32.

    Data-parallel training: when ``torch.distributed`` is initialized with two or more
    processes (``torchrun``, see :mod:`topicvae.training.distributed`), ``fit`` trains with
    DistributedDataParallel. Pass each process its own share as a
    :class:`~topicvae.text.shards.ShardedBagOfWords` built with the process group, or the whole
    corpus (every process then trains on the rows rank, rank + R, ...).
    """

    def __init__(
        self,
        model: str = "prodlda",
        groups: str | GroupSpec = "2x25",
        *,
        objective: str = "hfvae",
        alpha: float | None = None,
        beta: float | None = None,
        gamma: float | None = None,
        delta: float | None = None,
        epochs: int = 100,
        batch_size: int | None = None,
        lr: float | None = None,
        hidden_sizes: Sequence[int] | None = None,
        dropout: float | None = None,
        prior_concentration: float = 1.0,
        temperature: float = 0.66,
        encoder_input: str | None = None,
        posterior_norm: str | None = None,
        word_shift: bool | None = None,
        init: str | None = None,
        topic_dropout: float | None = None,
        gamma_warmup: float | None = None,
        lr_schedule: str = "constant",
        vectorizer: TextVectorizer | None = None,
        seed: int = 0,
        device: str = "auto",
        precision: str = "auto",
    ):
        self.model = model
        self.groups = groups
        self.objective = objective
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.delta = delta
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.prior_concentration = prior_concentration
        self.temperature = temperature
        self.encoder_input = encoder_input
        self.posterior_norm = posterior_norm
        self.topic_dropout = topic_dropout
        self.word_shift = word_shift
        self.init = init
        self.gamma_warmup = gamma_warmup
        self.lr_schedule = lr_schedule
        self.vectorizer = vectorizer
        self.seed = seed
        self.device = device
        self.precision = precision

    # -----------------------------------------------------------------------------------
    # parameters
    # -----------------------------------------------------------------------------------
    def _architecture(self) -> dict[str, Any]:
        """The model's architecture options as ``build_model`` takes them (None: the model's default)."""
        options = {
            "posterior_norm": self.posterior_norm, "word_shift": None if self.word_shift is None else bool(self.word_shift),
            "init": self.init, "topic_dropout": None if self.topic_dropout is None else float(self.topic_dropout),
        }
        resolved: dict[str, Any] = {"encoder_input": self.encoder_input or MODEL_DEFAULTS[self.model]["encoder_input"]}
        if self.model == "prodlda":
            resolved["architecture"] = {k: v for k, v in options.items() if v is not None}
        return resolved

    def _batch_size(self) -> int:
        return MODEL_DEFAULTS[self.model]["batch_size"] if self.batch_size is None else self.batch_size

    def _gamma_warmup(self) -> float:
        """The warm-up's share of training as trained: the model's default for HFVAE, none for the
        other presets (they tie gamma to the other weights: beta-TCVAE's one-level TC, beta-VAE's
        equal weights)."""
        if self.gamma_warmup is not None:
            return float(self.gamma_warmup)
        return float(MODEL_DEFAULTS[self.model]["gamma_warmup"]) if self.objective == "hfvae" else 0.0

    def _validate(self) -> tuple[GroupSpec, ObjectiveWeights, float]:
        if self.model not in MODEL_DEFAULTS:
            raise ValueError(f"model={self.model!r} is unknown: choose one of {', '.join(MODEL_DEFAULTS)}")
        groups = GroupSpec.coerce(self.groups)
        if self.model == "prodlda" and groups.num_gaussian_dims == 1:
            # The Laplace approximation of the Dirichlet prior has variance (1/a)(1 - 2/K) +
            # (1/K^2)(1/a) = 0 for K = 1, and softmax over one topic is constant: nothing to learn.
            raise ValueError(
                f"groups={self.groups if isinstance(self.groups, str) else str(groups)!r} gives ProdLDA a single "
                "Gaussian topic, whose Dirichlet prior is "
                "degenerate (zero variance); give at least 2 Gaussian topics, e.g. groups='2'"
            )
        weights = ObjectiveWeights.preset(
            self.objective, alpha=self.alpha, beta=self.beta, gamma=self.gamma, delta=self.delta
        )
        lr = MODEL_DEFAULTS[self.model]["lr"] if self.lr is None else self.lr
        check_training_options(
            epochs=self.epochs, batch_size=self._batch_size(), lr=lr, temperature=self.temperature,
            hidden_sizes=self.hidden_sizes, items="documents", lr_example="2e-3",
        )
        for name in ("dropout", "topic_dropout"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not (isinstance(value, numbers.Real) and 0.0 <= value < 1.0)):
                raise ValueError(f"{name}={value!r} is invalid: give a probability in [0, 1)")
        _check_choice("encoder_input", self.encoder_input, ENCODER_INPUTS)
        _check_choice("posterior_norm", self.posterior_norm, POSTERIOR_NORMS)
        _check_choice("init", self.init, ("default", "xavier"))
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r} is unknown: choose one of {', '.join(map(repr, LR_SCHEDULES))}")
        share = self.gamma_warmup
        if share is not None and (isinstance(share, bool) or not (isinstance(share, numbers.Real) and 0.0 <= share < 1.0)):
            raise ValueError(f"gamma_warmup={self.gamma_warmup!r} is invalid: give the share of training in [0, 1) that weighs the TC within groups by 1")
        if share and self.objective != "hfvae":
            raise ValueError(
                f"gamma_warmup={share!r} needs objective='hfvae': objective={self.objective!r} ties gamma to its other "
                "weights; give gamma_warmup=0, or objective='hfvae' to set each weight"
            )
        if self.word_shift is not None and not isinstance(self.word_shift, (bool, np.bool_)):
            raise ValueError(f"word_shift={self.word_shift!r} is invalid: give True, False or None")
        if self.model != "prodlda":
            for name in PRODLDA_ARCHITECTURE:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}={getattr(self, name)!r} applies to ProdLDA only: leave it None for model={self.model!r}")
        check_seed(self.seed)
        if self.vectorizer is not None and not isinstance(self.vectorizer, TextVectorizer):
            raise ValueError(
                f"vectorizer={type(self.vectorizer).__name__}(...) is not a topicvae TextVectorizer: pass TextVectorizer(...), "
                "or put your vectorizer before the model in a pipeline, make_pipeline(CountVectorizer(), TopicModel())"
            )
        if not (isinstance(self.prior_concentration, numbers.Real) and math.isfinite(self.prior_concentration) and self.prior_concentration > 0):
            raise ValueError(f"prior_concentration={self.prior_concentration!r} is invalid: give a positive number")
        return groups, weights, float(lr)

    # -----------------------------------------------------------------------------------
    # fitting
    # -----------------------------------------------------------------------------------
    def _counts(self, X, *, fit: bool) -> sp.csr_matrix:
        """Turn documents (strings), a count matrix or a sharded bag-of-words into a CSR float32 matrix.

        Matrices (NumPy, SciPy sparse, pandas DataFrames, torch tensors, nested lists of numbers)
        go through scikit-learn's ``validate_data``: with ``fit`` it records ``n_features_in_``
        (and ``feature_names_in_`` for a DataFrame with word columns); otherwise it checks them.
        """
        if isinstance(X, ShardedBagOfWords):  # fit reads shards lazily instead (_training_data)
            return sp.vstack(list(X.matrices()), format="csr")
        if isinstance(X, str):
            raise ValueError("X is a single string: pass a list of documents, or a path read with read_corpus()")
        docs = _as_documents(X)
        if docs is None:
            if fit:
                self.vectorizer_ = None
            if isinstance(X, torch.Tensor):
                X = X.detach().cpu().numpy()
            try:
                matrix = validate_data(
                    self, X, reset=fit, accept_sparse="csr", dtype=(np.float32, np.float64), ensure_min_features=1,
                )
            except ValueError as error:
                if fit or "features, but" not in str(error):
                    raise
                remedy = " or the documents themselves" if getattr(self, "vectorizer_", None) is not None else ""
                raise ValueError(
                    f"{error} Pass counts over the model's {self.n_features_in_}-word vocabulary (vocabulary_){remedy}."
                ) from None
            matrix = sp.csr_matrix(matrix, dtype=np.float32)
            if matrix.nnz and matrix.data.min() < 0:
                raise ValueError("Negative values in data passed to TopicModel as X: pass word counts (whole numbers >= 0)")
            return matrix
        if fit:
            self.__dict__.pop("feature_names_in_", None)  # set by an earlier fit on a DataFrame
            self.vectorizer_ = TextVectorizer(**(self.vectorizer.to_config() if self.vectorizer else {}))
            counts = self.vectorizer_.fit_transform(docs)
            self.n_features_in_ = counts.shape[1]
            return counts
        if getattr(self, "vectorizer_", None) is None:
            raise ValueError("this model was fitted on a count matrix: pass a count matrix with the same vocabulary")
        return self.vectorizer_.transform(docs)

    def fit(
        self,
        X,
        y=None,
        *,
        vocabulary: Sequence[str] | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 1,
        resume: bool = False,
    ) -> TopicModel:
        """Fit on documents (list of strings) or a document-term count matrix.

        See :meth:`fit_iter` for checkpointing and resuming.
        """
        for _ in self.fit_iter(
            X, vocabulary=vocabulary, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume
        ):
            pass
        return self

    def fit_iter(
        self,
        X,
        *,
        vocabulary: Sequence[str] | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 1,
        resume: bool = False,
    ) -> Iterator[TrainingProgress]:
        """Like :meth:`fit`, but yield a :class:`TrainingProgress` after every optimizer step.

        With ``checkpoint_dir``, the state at the end of every ``checkpoint_every``-th epoch and
        of the last one is written atomically to ``checkpoint_dir/checkpoint.pt``: the model's
        state dict, Adam's state, the epoch, the history, the random states, the options, a
        fingerprint of the training matrix and the vocabulary. If training stops early (an
        exception such as a diverged loss or KeyboardInterrupt, or closing this generator), the
        last completed epoch is written before the exception goes on, unless it is on disk
        already. ``resume=True`` continues from that checkpoint and reaches the same model as
        an uninterrupted run; it is refused when the documents or options differ. Without
        ``resume``, an existing checkpoint is never overwritten: training is refused instead.

        A caller may stop iterating at any step (its own stopping rule): the model is then
        usable as it stands (``topics``, ``transform``, ``save``), but the analysis of the
        training documents that ends a complete fit is not made: ``analysis_`` and
        ``topic_correlation_`` are None until ``analysis_ = analyse(X)``. The run draws its
        random numbers from its own streams (:class:`~topicvae.utils.random_state.RandomStreams`):
        the caller's global Python, NumPy and torch generators are left as they were.
        """
        groups, weights, lr = self._validate()
        check_checkpoint_options(checkpoint_dir, checkpoint_every, resume)
        process_group = current_process_group()
        device = resolve_device(self.device, process_group)
        autocast_dtype = _autocast_dtype(self.precision, device)
        data = self._training_data(X, vocabulary, process_group)
        if process_group is None or process_group.is_main:
            self._warn_if_degenerate(groups, data.n_documents)
        # what the last fit found about its own model goes with it: a fit stopped early has none
        self.topic_correlation_, self.analysis_ = None, None

        seed = int(self.seed)
        streams = RandomStreams(seed, cuda=device.type == "cuda")
        with streams.active():
            self.groups_, self.weights_ = groups, weights
            self.model_ = build_model(
                self.model,
                data.vocab_size,
                groups,
                hidden_sizes=None if self.hidden_sizes is None else tuple(int(h) for h in self.hidden_sizes),
                dropout=None if self.dropout is None else float(self.dropout),
                prior_concentration=float(self.prior_concentration),
                temperature=float(self.temperature),
                **self._architecture(),
            ).to(device)
        trained: torch.nn.Module = self.model_
        if process_group is not None:
            # Every rank built the same initial model from the seed (and DDP broadcasts rank 0's
            # anyway); from here on each rank draws its own shuffles, dropout masks and samples.
            rank_seed = int(np.random.SeedSequence([seed, process_group.rank]).generate_state(1)[0])
            streams = RandomStreams(rank_seed, cuda=device.type == "cuda")
            trained = torch.nn.parallel.DistributedDataParallel(
                self.model_, device_ids=[device.index] if device.type == "cuda" else None
            )
        optimizer = torch.optim.Adam(self.model_.parameters(), lr=lr, betas=MODEL_DEFAULTS[self.model]["adam_betas"])
        self.n_documents_ = data.n_documents
        self.history_: list[dict[str, float]] = []
        checkpoints, start_epoch = None, 0
        if checkpoint_dir is not None:
            checkpoints = TrainingCheckpoints(
                checkpoint_dir,
                every=checkpoint_every,
                run=self._run_description(data.fingerprint(), lr, device, process_group),
                extra={"config": self._params_config(), "vocabulary": self.vocabulary_},
                process_group=process_group,
            )
            start_epoch, self.history_ = checkpoints.start(
                resume=resume, model=self.model_, optimizer=optimizer, streams=streams
            )
        batches = data.batches(self._batch_size(), device)
        steps = train(
            trained, batches, weights, epochs=int(self.epochs), optimizer=optimizer, generator=streams.shuffle,
            start_epoch=start_epoch, dataset_size=data.n_documents, process_group=process_group,
            autocast_dtype=autocast_dtype, lr_schedule=self.lr_schedule, weights_at=_warmup_schedule(weights, self._gamma_warmup()),
        )
        try:
            # the run's random numbers are drawn inside its steps only: between two steps the
            # caller's generators are as the caller left them
            for progress in streams.drawing(steps):
                if progress.epoch_terms is not None:
                    self.history_.append({"epoch": progress.epoch, **progress.epoch_terms})
                    if checkpoints is not None:
                        checkpoints.epoch_done(
                            progress.epoch, self.epochs, model=self.model_, optimizer=optimizer, streams=streams,
                            history=self.history_,
                        )
                yield progress
        except BaseException:  # KeyboardInterrupt and GeneratorExit (an early close) included
            self.model_.eval()  # a model stopped early is used as it stands, without dropout
            if checkpoints is not None:
                try:
                    checkpoints.write_pending()
                except Exception:  # pragma: no cover - the original error matters more; the old checkpoint is intact
                    pass
            raise
        self.model_.eval()
        self.topic_correlation_ = self._marginal_correlation(data, process_group)
        # The pruned topics and the associations between the active ones, on (a random subset of)
        # this process's training documents; under data parallelism every rank takes rank 0's.
        analysis = self._analyse_counts(data.subset(ANALYSIS_DOCUMENTS, seed), seed=seed)
        if process_group is not None:  # every rank takes rank 0's, sent as plain data
            analysis = TopicAnalysis.from_dict(gather_objects(analysis.to_dict(), process_group)[0])
        self.analysis_ = analysis

    def _training_data(self, X, vocabulary: Sequence[str] | None, process_group: ProcessGroup | None) -> BagOfWordsSource:
        """The training documents as this process holds them, and the fitted vocabulary attributes."""
        self.vectorizer_ = None
        if isinstance(X, ShardedBagOfWords):
            rank, world_size = (process_group.rank, process_group.world_size) if process_group else (0, 1)
            if (X.rank, X.world_size) != (rank, world_size):
                raise ValueError(
                    f"{X.directory} holds rank {X.rank}'s share of {X.world_size} process(es), but this is rank {rank} "
                    f"of {world_size}: build the bag-of-words with the same processes that train on it"
                )
            if vocabulary is not None:
                raise ValueError("vocabulary is given by the sharded bag-of-words: do not pass vocabulary=")
            if X.n_documents < 3:  # the analysis at the end of fit needs 3
                raise ValueError(
                    f"{X.directory} holds {X.n_documents} documents with vocabulary words: pass more documents "
                    "or loosen the vocabulary filters (min_df, max_df, stop words)"
                )
            self.vectorizer_ = X.vectorizer
            self.vocabulary_ = list(X.vocabulary)
            self.n_features_in_ = len(self.vocabulary_)
            self.__dict__.pop("feature_names_in_", None)
            self.n_empty_documents_ = X.n_empty_documents
            return BagOfWordsSource.sharded(X)
        counts = self._counts(X, fit=True)
        n_docs, vocab_size = counts.shape
        if self.vectorizer_ is not None:
            self.vocabulary_ = list(self.vectorizer_.vocabulary_)
        elif vocabulary is not None:
            if len(vocabulary) != vocab_size:
                raise ValueError(f"vocabulary has {len(vocabulary)} words but X has {vocab_size} columns")
            self.vocabulary_ = [str(w) for w in vocabulary]
        elif getattr(self, "feature_names_in_", None) is not None:  # a DataFrame's word columns
            self.vocabulary_ = [str(w) for w in self.feature_names_in_]
        else:
            self.vocabulary_ = [f"w{i}" for i in range(vocab_size)]
        nonempty = np.asarray(counts.sum(axis=1)).ravel() > 0
        self.n_empty_documents_ = int((~nonempty).sum())
        counts = counts[nonempty]  # an empty document carries no information about topics
        if counts.shape[0] < 3:  # the analysis at the end of fit needs 3 (correlations after removing length)
            raise ValueError(
                f"only {counts.shape[0]} of {n_docs} documents have any word of the vocabulary (n_samples = {counts.shape[0]}; "
                "training needs 3): "
                "pass more documents or loosen the vocabulary filters (min_df, max_df, stop words)"
            )
        return BagOfWordsSource.in_memory(counts, self.vocabulary_, process_group)

    def _warn_if_degenerate(self, groups: GroupSpec, n_training_documents: int) -> None:
        """Warn (DegenerateCorpusWarning) when the bag-of-words can hardly hold the topics asked for.

        Training goes on (a small vocabulary can be what the user wants), but the topics printed
        at the end would look like findings: the warning names the cause first.
        """
        words = self.vocabulary_ if self.vectorizer_ is not None else []
        phrases = unsegmented_text(words)
        if phrases is not None:
            warnings.warn(
                f"the vocabulary holds whole phrases as words ({phrases}): the text seems to have no spaces between words "
                "(Chinese, Japanese, Thai...), so topics will list sentences; split the text into words separated by "
                "spaces first (e.g. with jieba for Chinese or MeCab for Japanese; the default token pattern keeps their "
                "words of any length)",
                DegenerateCorpusWarning,
                stacklevel=3,
            )
        n_topics = sum(group.size for group in groups.gaussian)
        if len(self.vocabulary_) < max(n_topics, 2):
            warnings.warn(
                f"the vocabulary has {len(self.vocabulary_)} word{'s' if len(self.vocabulary_) != 1 else ''} for {n_topics} "
                "topics: topics cannot differ; "
                "pass more documents or loosen the vocabulary filters (min_df, max_df, stop words) or the token pattern",
                DegenerateCorpusWarning,
                stacklevel=3,
            )
        n_documents = self.n_empty_documents_ + n_training_documents
        if n_documents and self.n_empty_documents_ > n_documents / 2:
            warnings.warn(
                f"{self.n_empty_documents_} of {n_documents} documents have no word of the vocabulary and are left out "
                "of training: the vocabulary filters (min_df, max_df, max_features, stop words) or the token pattern "
                "miss most of the corpus",
                DegenerateCorpusWarning,
                stacklevel=3,
            )

    def _run_description(
        self, corpus: dict[str, Any], lr: float, device: torch.device, process_group: ProcessGroup | None
    ) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: every option that shapes training, and the exact data.

        Weights and the learning rate are compared as resolved, so that a default and the same
        value given explicitly count as the same run.
        """
        params = self._params_config()
        for name in ("alpha", "beta", "gamma", "delta"):
            params.pop(name)
        # a run without a warm-up is described as runs were before the option existed, so that
        # their checkpoints (written without it) still resume
        warmup = params.pop("gamma_warmup")
        if warmup:
            params["gamma_warmup"] = warmup
        # likewise dropout on theta that is the encoder's dropout (every run before topic_dropout)
        topic_dropout = params.pop("topic_dropout")
        if topic_dropout is not None and topic_dropout != self.model_.encoder_dropout.p:
            params["topic_dropout"] = topic_dropout
        params.update(
            lr=lr,
            device=device.type,
            weights=self.weights_.as_dict(),
            vectorizer=self.vectorizer_.to_config() if self.vectorizer_ is not None else None,
            corpus=corpus,
        )
        if process_group is not None:  # each rank's share of the data, and how many ranks
            params.update(corpus=gather_objects(corpus, process_group), processes=process_group.world_size)
        return json.loads(json.dumps(params))  # plain JSON values: tuples become lists, as they come back from disk

    # -----------------------------------------------------------------------------------
    # using a fitted model
    # -----------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if getattr(self, "model_", None) is None:
            raise NotFittedError("this TopicModel is not fitted yet: call fit() first, or TopicModel.load(path)")

    def _eval_batches(self, counts: sp.csr_matrix, batch_size: int = 2048) -> Iterator[torch.Tensor]:
        """The documents as dense tensors on the model's device, with the model in eval mode."""
        self.model_.eval()
        device = next(self.model_.parameters()).device
        for start in range(0, counts.shape[0], batch_size):
            yield torch.from_numpy(counts[start : start + batch_size].toarray()).to(device)

    def _batched_moments(self, counts: sp.csr_matrix) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Posterior means per group, and the variances of all columns, for every document."""
        if counts.shape[0] == 0:  # no document: empty moments of the right widths
            nothing = torch.zeros((0, self.groups_.num_columns))
            return [nothing[:, :group.size] for group in self.groups_], nothing
        network = self.model_.eval()
        if next(network.parameters()).device.type == "cpu":
            # In float64: a float32 matrix product rounds a row differently by its position in
            # the batch (the kernels block rows), so a document's topics would change in the
            # 8th digit with its neighbours; in float64 that noise is far below anything shown.
            network = copy.deepcopy(network).double()
        dtype = next(network.parameters()).dtype
        with torch.no_grad():
            parts = [network.posterior_moments(bow.to(dtype)) for bow in self._eval_batches(counts)]
        means = [torch.cat([p[d][0] for p in parts]).cpu() for d in range(len(self.groups_))]
        variances = torch.cat([torch.cat([p[d][1] for p in parts]).cpu() for d in range(len(self.groups_))], dim=1)
        return means, variances

    def transform(self, X) -> np.ndarray:
        """Document representations, one column per topic (group by group), shape [N, K].

        ProdLDA: topic proportions theta = softmax of the posterior mean over all Gaussian topics
        (rows sum to 1 over the Gaussian columns). NVDM: the posterior mean of z. Concrete
        groups: the category probabilities.

        A document without any word of the model's vocabulary has no representation: the
        encoder would map every such document to one and the same point, which says nothing
        about it. Its row is NaN, and an :class:`EmptyDocumentWarning` gives their number
        (``np.isnan(theta).any(axis=1)`` finds them).
        """
        self._check_fitted()
        counts = self._counts(X, fit=False)
        self._check_vocabulary_width(counts)
        means, _ = self._batched_moments(counts)
        with torch.no_grad():
            theta = self.model_.representation(means).numpy().astype(np.float64)
        empty = np.flatnonzero(np.asarray(counts.sum(axis=1)).ravel() == 0)
        if len(empty):
            theta[empty] = np.nan
            shown = ", ".join(str(i) for i in empty[:10]) + (", ..." if len(empty) > 10 else "")
            warnings.warn(
                f"{len(empty)} of {counts.shape[0]} documents have no word of the model's vocabulary (rows {shown}): "
                "their rows are NaN, since the model can say nothing about them",
                EmptyDocumentWarning,
                stacklevel=2,
            )
        return theta

    def _check_vocabulary_width(self, counts: sp.csr_matrix) -> None:
        if counts.shape[1] != len(self.vocabulary_):
            raise ValueError(
                f"X has {counts.shape[1]} columns but the model's vocabulary has {len(self.vocabulary_)} words"
            )

    def _source(self, X) -> BagOfWordsSource:
        """The documents of X with vocabulary words, wherever they live: a sharded bag-of-words
        (this process's shards, counted with this model's vocabulary), or anything ``transform``
        takes, counted in memory."""
        if isinstance(X, ShardedBagOfWords):
            if X.vocabulary != self.vocabulary_:
                raise ValueError(f"{X.directory} was counted with another vocabulary than this model's")
            return BagOfWordsSource.sharded(X)
        counts = self._counts(X, fit=False)
        self._check_vocabulary_width(counts)
        return BagOfWordsSource.in_memory(counts[np.asarray(counts.sum(axis=1)).ravel() > 0], self.vocabulary_)

    def information(self, X, *, seed: int = 0, max_documents: int | None = None) -> InformationReport:
        """I(x; z), I(x; z_d), I(x; z_de) and the total correlations over the documents X.

        q(z) is the exact mixture over the N documents given (objective.md, identity 2), at
        one sample z ~ q(z | x_n) per document drawn with ``seed``; dropout is off. Documents
        without any vocabulary word are left out, as in training. The cost grows as N^2: with
        ``max_documents``, a larger corpus is represented by that many documents drawn at random
        (with ``seed``), and N is that number.
        """
        self._check_fitted()
        counts = self._source(X).subset(max_documents, seed)
        if counts.shape[0] < 2:
            raise ValueError(f"{counts.shape[0]} of the documents have vocabulary words: information needs at least 2")
        return encoder_information(self.model_.encode, self._eval_batches(counts), seed=seed)

    def document_elbo(self, X, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Each document's ELBO and word count: the bound on log p(x_d) behind perplexity.

        ELBO_d = log p(x_d | z) - KL(q(z | x_d) || p(z)) with one sample z ~ q(z | x_d) (drawn
        with ``seed``) for the likelihood, the KL in closed form for Gaussian groups and from the
        same sample for Concrete ones; dropout is off. The likelihood leaves out the multinomial
        coefficient, as ProdLDA's and NVDM's published perplexities do. This is the plain ELBO
        whatever weights the model was trained with.
        """
        self._check_fitted()
        counts = self._counts(X, fit=False)
        self._check_vocabulary_width(counts)
        elbos = []
        with torch.no_grad(), seeded(seed):
            for bow in self._eval_batches(counts):
                out = self.model_(bow)
                elbos.append(item_elbo(out.log_likelihood, out.posteriors, out.priors, out.samples).double().cpu())
        elbo = torch.cat(elbos).numpy() if elbos else np.zeros(0)
        return elbo, np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()

    def perplexity(self, X, *, per_document: bool = False, seed: int = 0) -> float:
        """Held-out perplexity from the ELBO (an upper bound on the true perplexity).

        Corpus-level (default): exp(sum_d -ELBO_d / sum_d N_d). ``per_document=True``: the
        variant of the ProdLDA paper's code, exp(mean_d(-ELBO_d / N_d)). Documents without any
        vocabulary word are left out of both.
        """
        return perplexity_from_elbo(*self.document_elbo(X, seed=seed), per_document=per_document)

    def score(self, X, y=None) -> float:
        """The per-word ELBO on X in nats (higher is better): sum_d ELBO_d / sum_d N_d.

        The ELBO of :meth:`document_elbo` (one sample, drawn with seed 0, so the same documents
        always get the same score), summed over the documents with vocabulary words and divided
        by their words. ``-score(X)`` is the log of :meth:`perplexity`, so scikit-learn's model
        selection (``GridSearchCV``, ``cross_val_score``) picks the model of lowest held-out
        perplexity without a custom scorer. ``y`` is ignored.

        Raises
        ------
        ValueError
            When no document of X has a word of the model's vocabulary.
        """
        elbo, lengths = self.document_elbo(X)
        keep = lengths > 0
        if not keep.any():
            raise ValueError("no document of X has a word of the model's vocabulary: score needs at least one")
        return float(elbo[keep].sum() / lengths[keep].sum())

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The names of :meth:`transform`'s columns: the topic labels '<group>:<index>'.

        ``input_features`` (scikit-learn's protocol) is only checked: it must have
        ``n_features_in_`` names, the vocabulary's words when given.
        """
        self._check_fitted()
        if input_features is not None and len(input_features) != self.n_features_in_:
            raise ValueError(
                f"input_features has {len(input_features)} names but the model reads {self.n_features_in_} "
                "words: pass None or the vocabulary"
            )
        return np.asarray(self.topic_labels(), dtype=object)

    def to_pyldavis(self, X, **options):
        """pyLDAvis's prepared data for the documents X (ProdLDA; see :mod:`topicvae.topics.export`).

        The topic-term matrix is each Gaussian topic's decoder output alone, p(w | e_k), the
        document-topic matrix :meth:`transform`'s proportions; ``options`` go to
        ``pyLDAvis.prepare``. Show it with ``pyLDAvis.display`` in a notebook or write it with
        :func:`topicvae.topics.export.save_pyldavis_html`.
        """
        from topicvae.topics.export import prepare_pyldavis

        return prepare_pyldavis(self, X, **options)

    def set_params(self, **params) -> TopicModel:
        """scikit-learn's ``set_params``; ``vectorizer__*`` parameters start from a default
        ``TextVectorizer()`` when ``vectorizer`` is None (the default)."""
        if self.vectorizer is None and "vectorizer" not in params and any(key.startswith("vectorizer__") for key in params):
            self.vectorizer = TextVectorizer()
        return super().set_params(**params)

    def __sklearn_is_fitted__(self) -> bool:
        return getattr(self, "model_", None) is not None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # counts: sparse matrices, non-negative values, or raw documents (through the vectorizer)
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True
        tags.input_tags.string = True
        return tags

    def topic_labels(self) -> list[str]:
        """A label per topic column: '<group>:<index>'."""
        self._check_fitted()
        return [f"{group}:{index}" for group, index in self.groups_.topic_labels()]

    def topic_word_scores(self) -> np.ndarray:
        """[topics, vocabulary] scores whose order ranks each topic's words (docs/topics.md)."""
        self._check_fitted()
        self.model_.eval()
        return self.model_.topic_word_scores().cpu().numpy()

    def topics(self, n: int = 10) -> pd.DataFrame:
        """The top ``n`` words of every topic, as a DataFrame indexed by topic label."""
        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} is invalid: give a whole number >= 1")
        scores = self.topic_word_scores()
        top = np.argsort(-scores, axis=1, kind="stable")[:, : min(n, scores.shape[1])]
        rows = [
            {"group": group, "topic": index, "words": [self.vocabulary_[w] for w in top[k]]}
            for k, (group, index) in enumerate(self.groups_.topic_labels())
        ]
        return pd.DataFrame(rows, index=pd.Index(self.topic_labels(), name="label"))

    def _marginal_correlation(self, source: BagOfWordsSource, process_group: ProcessGroup | None = None) -> np.ndarray:
        """Correlation between topics under the inference marginal q(z) = mean_n q(z | x_n)
        (:func:`topicvae.topics.analysis.correlation_under_q`).

        The source's documents (all with vocabulary words) come matrix by matrix (a corpus on
        disk shard by shard); the moments are accumulated as sums in float64, and summed over
        the ranks in data-parallel training, so every document of every rank counts once.
        """
        moments = CodeMoments.zero(self.groups_.num_columns)
        for matrix in source.matrices():
            if matrix.shape[0] == 0:
                continue
            means, variances = self._batched_moments(matrix)
            moments = moments + CodeMoments.of(torch.cat(means, dim=1).double().numpy(), variances.double().numpy())
        if process_group is not None:
            device = next(self.model_.parameters()).device  # NCCL reduces GPU tensors only
            moments = CodeMoments.from_vector(sum_over_ranks(moments.as_vector(), device), self.groups_.num_columns)
        return correlation_under_q(moments)

    def topic_correlation(self, X=None) -> np.ndarray:
        """Topic-by-topic correlation under q(z) on X (or the training corpus, computed at fit)."""
        self._check_fitted()
        if X is None:
            if self.topic_correlation_ is None:
                raise NotFittedError(
                    "this TopicModel's training stopped before its end, so it has no correlation of its training "
                    "documents: pass the documents, topic_correlation(X)"
                )
            return self.topic_correlation_
        return self._marginal_correlation(self._source(X))

    def _analyse_counts(
        self, counts: sp.csr_matrix, *, seed: int, n_permutations: int = 200, level: float = 0.01, mi_threshold: float | None = None
    ) -> TopicAnalysis:
        if counts.shape[0] < 3:
            raise ValueError(
                f"the analysis got {counts.shape[0]} documents with vocabulary words: it needs at least 3 "
                "(pass more documents, or a larger max_documents)"
            )
        information = encoder_information(self.model_.encode, self._eval_batches(counts), seed=seed)
        pruning = information.pruning(mi_threshold)
        # the variables are Gaussian topics (one column each, labelled like it) and Concrete
        # groups (several columns, one variable): associations are between active Gaussian topics
        variable = {label: v for v, label in enumerate(self.groups_.variable_labels())}
        labels = self.topic_labels()
        active_columns = [c for c in self.groups_.gaussian_columns() if pruning.active[variable[labels[c]]]]
        means, variances = self._batched_moments(counts)
        code_means = torch.cat(means, dim=1).double().numpy()
        log_length = np.log(np.asarray(counts.sum(axis=1), dtype=np.float64).ravel())
        correlations = topic_correlations(
            code_means, variances.double().numpy(), topics=active_columns, log_length=log_length,
            n_permutations=n_permutations, level=level, seed=seed,
        )
        return TopicAnalysis(information, pruning, correlations, self.groups_.variable_labels())

    def analyse(
        self,
        X,
        *,
        max_documents: int | None = ANALYSIS_DOCUMENTS,
        seed: int = 0,
        n_permutations: int = 200,
        level: float = 0.01,
        mi_threshold: float | None = None,
    ) -> TopicAnalysis:
        """Which topics are active, and how active topics associate, over the documents X.

        The information per topic (:meth:`information`) decides the active topics by the gap
        rule (:func:`topicvae.objective.information.prune_by_gap`), or, with ``mi_threshold``, as those
        reaching that many nats; between the active Gaussian topics,
        :func:`topicvae.topics.analysis.topic_correlations` gives their correlation under q(z) with
        log document length partialled out, their partial correlations (graphical lasso) and a
        permutation null at ``level``. ``max_documents`` (default 5,000; None for all) bounds the
        O(N^2) cost with a random subset drawn with ``seed``. Documents without vocabulary
        words are left out. ``fit`` stores this analysis of the training documents as
        ``analysis_``.
        """
        self._check_fitted()
        counts = self._source(X).subset(max_documents, seed)
        return self._analyse_counts(counts, seed=seed, n_permutations=n_permutations, level=level, mi_threshold=mi_threshold)

    def label_alignment(self, X, labels: Sequence, *, topics: Sequence[int] | None = None) -> LabelAlignment:
        """Each topic's dominant label, and purity and NMI of the documents' top topics (active topics).

        ``labels`` holds one label per document of X (documents without vocabulary words are
        left out with their labels). ProdLDA's documents are weighted by ``transform``'s topic
        proportions; NVDM's code is not proportions, so its documents are weighted by the
        softmax of the posterior means. A document's top topic is chosen among ``topics``
        (code columns; default: the active Gaussian topics of ``analysis_``, or all Gaussian
        topics when there is no analysis or none is active). See
        :func:`topicvae.topics.analysis.label_alignment`.
        """
        self._check_fitted()
        counts = self._counts(X, fit=False)
        self._check_vocabulary_width(counts)
        labels = list(labels)
        if len(labels) != counts.shape[0]:
            raise ValueError(f"{len(labels)} labels were given for {counts.shape[0]} documents: give one label per document")
        keep = np.asarray(counts.sum(axis=1)).ravel() > 0
        counts = counts[keep]
        theta = self.transform(counts)
        if self.model == "nvdm":  # NVDM's code is not proportions: weight documents by the softmax of the means
            columns = self.groups_.gaussian_columns()
            theta[:, columns] = np.exp(theta[:, columns] - theta[:, columns].max(1, keepdims=True))
            theta[:, columns] /= theta[:, columns].sum(1, keepdims=True)
        if topics is None and getattr(self, "analysis_", None) is not None:
            topics = self.analysis_.correlations.topics.tolist()
        return label_alignment(theta, [label for label, k in zip(labels, keep) if k], topics=list(topics or self.groups_.gaussian_columns()))

    def correlated_topics(
        self, n_pairs: int | None = 10, *, across_groups: bool = True, n_words: int = 10, analysis: TopicAnalysis | None = None
    ) -> pd.DataFrame:
        """The ``n_pairs`` most strongly associated pairs of active topics (None: all), across groups unless asked otherwise.

        Pairs are ranked by their partial correlation under q(z) (the association left once
        document length and every other active topic are accounted for; docs/topics.md),
        largest first. Columns: ``partial``; ``correlation`` (length partialled out, other
        topics not); ``null_quantile`` (the pair's 1 - level quantile of |partial| when each
        topic's documents are permuted on their own); ``significant`` (|partial| above the
        family-wise null threshold); ``shared_words`` (how many of the two topics' top
        ``n_words`` words they share) and ``kind``: ``"duplicate"`` when they share at least
        ``DUPLICATE_SHARED_WORDS`` of their top 10 words (one theme learned twice, not two
        related themes), ``"association"`` otherwise. ``analysis`` is the analysis to read
        (default: ``analysis_``, the training documents').
        """
        self._check_fitted()
        analysis = analysis if analysis is not None else getattr(self, "analysis_", None)
        columns = ["topic_a", "topic_b", "partial", "correlation", "null_quantile", "significant", "shared_words", "kind", "words_a", "words_b"]
        if analysis is None:
            raise NotFittedError(
                "this TopicModel has no topic analysis (its training stopped before the end, or it was saved before "
                "analyses existed): pass analysis=model.analyse(X), or set model.analysis_ = model.analyse(X)"
            )
        corr = analysis.correlations
        labels = self.groups_.topic_labels()
        top = self.topics(max(n_words, 10))["words"].tolist()
        significant = corr.significant()
        pairs = []
        for a in range(len(corr.topics)):
            for b in range(a + 1, len(corr.topics)):
                i, j = int(corr.topics[a]), int(corr.topics[b])
                if across_groups and labels[i][0] == labels[j][0]:
                    continue
                shared = len(set(top[i][:10]) & set(top[j][:10]))
                pairs.append({
                    "topic_a": f"{labels[i][0]}:{labels[i][1]}",
                    "topic_b": f"{labels[j][0]}:{labels[j][1]}",
                    "partial": float(corr.partial[a, b]),
                    "correlation": float(corr.correlation[a, b]),
                    "null_quantile": float(corr.null_quantile[a, b]),
                    "significant": bool(significant[a, b]),
                    "shared_words": shared,
                    "kind": "duplicate" if shared >= DUPLICATE_SHARED_WORDS else "association",
                    "words_a": top[i][:n_words],
                    "words_b": top[j][:n_words],
                })
        pairs.sort(key=lambda row: -row["partial"])
        return pd.DataFrame(pairs if n_pairs is None else pairs[:n_pairs], columns=columns)

    # -----------------------------------------------------------------------------------
    # persistence: data, not pickles
    # -----------------------------------------------------------------------------------
    def _params_config(self) -> dict[str, Any]:
        """The constructor's parameters as JSON values (the vectorizer is saved apart)."""
        params = plain(self.get_params(deep=False))
        params["groups"] = str(self.groups_)
        params["hidden_sizes"] = [int(h) for h in self.hidden_sizes] if self.hidden_sizes is not None else None
        params.pop("vectorizer")
        params["batch_size"] = int(self._batch_size())  # as trained, whatever the default becomes
        params["gamma_warmup"] = self._gamma_warmup()
        # the architecture as built, so that a later change of the defaults cannot change a saved model
        architecture = self._architecture()
        params["encoder_input"] = architecture["encoder_input"]
        if self.model == "prodlda":
            params.update({name: MODEL_DEFAULTS["prodlda"][name] for name in PRODLDA_ARCHITECTURE})
            params.update(architecture["architecture"])
            params["topic_dropout"] = float(self.model_.topic_dropout.p)  # as built (None defers to dropout)
        return params

    def _config(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "estimator": "TopicModel",
            "topicvae_version": package_version(),
            "params": self._params_config(),
            "weights": self.weights_.as_dict(),
            "vectorizer": self.vectorizer_.to_config() if self.vectorizer_ is not None else None,
            "fitted": {
                "n_documents": self.n_documents_,
                "n_empty_documents": self.n_empty_documents_,
                "history": self.history_,
                "topic_correlation": None if self.topic_correlation_ is None else self.topic_correlation_.tolist(),
                "analysis": self.analysis_.to_dict() if getattr(self, "analysis_", None) is not None else None,
            },
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``config.json``, ``vocabulary.txt`` and ``weights.pt`` (a state dict) to a directory.

        The directory is written next to its final place and moved there at the end, so an
        error never leaves a half-written model behind.
        """
        self._check_fitted()
        return write_model_directory(path, self._config(), self.model_, {VOCABULARY_FILE: "\n".join(self.vocabulary_) + "\n"})

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu") -> TopicModel:
        """Load a model written by :meth:`save`; never unpickles objects."""
        directory = Path(path)
        config = read_config(directory, estimator="TopicModel", required=(VOCABULARY_FILE,))
        vocabulary = _read_saved_vocabulary(directory / VOCABULARY_FILE)
        with interpreting_config(directory):
            params = {**LEGACY_ARCHITECTURE.get(config["params"].get("model"), {}), **config["params"]}
            vectorizer = (
                TextVectorizer.from_config(config["vectorizer"], vocabulary) if config.get("vectorizer") else None
            )
            params["device"] = device
            estimator = cls(**params)
            estimator.vectorizer_ = vectorizer
            estimator.vectorizer = vectorizer
            estimator.vocabulary_ = vocabulary
            estimator.n_features_in_ = len(vocabulary)
            estimator.groups_ = GroupSpec.parse(params["groups"])
            estimator.weights_ = ObjectiveWeights(**config["weights"])
            fitted = config["fitted"]
            estimator.n_documents_ = fitted["n_documents"]
            estimator.n_empty_documents_ = fitted["n_empty_documents"]
            estimator.history_ = fitted["history"]
            # None: saved from a fit stopped early (fit_iter), before the analysis that ends a fit
            estimator.topic_correlation_ = (
                None if fitted["topic_correlation"] is None else np.asarray(fitted["topic_correlation"], dtype=np.float64)
            )
            # models saved before the analysis existed have none: correlated_topics() then asks for analyse(X)
            estimator.analysis_ = TopicAnalysis.from_dict(fitted["analysis"]) if fitted.get("analysis") else None
            model: NeuralTopicModel = build_model(
                params["model"],
                len(vocabulary),
                estimator.groups_,
                hidden_sizes=params["hidden_sizes"],
                dropout=params["dropout"],
                prior_concentration=params["prior_concentration"],
                temperature=params["temperature"],
                **estimator._architecture(),
            )
        load_weights(directory, model, described_by=f"{CONFIG_FILE} and {VOCABULARY_FILE} ({len(vocabulary)} words)")
        estimator.model_ = model.to(resolve_device(device)).eval()
        return estimator
