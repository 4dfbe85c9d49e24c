"""Neural topic models whose latent code is split into groups: ProdLDA and NVDM.

Both models map a bag of words x (counts, [B, V]) to one posterior q(z_d | x) per latent group
and decode the side-by-side code of all groups back to a distribution over the vocabulary.
The training objective lives in :mod:`topicvae.objective.terms`; a model only supplies the
likelihood, the posteriors, the priors and the samples it needs.

ProdLDA (Srivastava & Sutton, 2017)
    Encoder: log(1 + counts), two softplus layers (100 units each) and dropout, then linear maps
    to the mean and log-variance of the Gaussian logits, each followed by batch-norm with a
    learned shift (the original's; ``posterior_norm`` chooses, see ``GroupedPosterior``).
    Prior: the Laplace approximation of a Dirichlet(a) on the topic proportions, a diagonal
    Gaussian on the logits with mean log a_k - mean(log a) and variance
    (1/a_k)(1 - 2/K) + (1/K^2) sum_j 1/a_j over the K Gaussian topics of all groups.
    Decoder: theta = softmax over all K Gaussian topics (dropout applied: ``topic_dropout``), then
    p(w | theta) = softmax(BN(theta W) + b), with a learned per-word shift b ("product of
    experts"). docs/analysis.md measures each choice against the alternatives.

NVDM (Miao et al., 2016)
    Encoder: an MLP with ReLU units; Gaussian posterior; standard-normal prior.
    Decoder: p(w | z) = softmax(R z + b).

Concrete groups (``10c``) are one relaxed one-hot variable each (Maddison et al., 2017), with
a uniform relaxed prior at the same temperature. Their sample enters the decoder as a point on
the simplex beside the Gaussian columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Normal
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from topicvae.latent.groups import GroupSpec
from topicvae.latent.posteriors import GroupedPosterior, ModelOutput

__all__ = ["NeuralTopicModel", "ProdLDA", "NVDM", "build_model", "MODEL_DEFAULTS"]

Tensor = torch.Tensor


def dirichlet_laplace_prior(concentration: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of the Laplace approximation of Dirichlet(a) in the softmax basis.

    MacKay (1998), as used by ProdLDA: mu_k = log a_k - mean_j log a_j and
    sigma_k^2 = (1/a_k)(1 - 2/K) + (1/K^2) sum_j 1/a_j.
    """
    num_topics = concentration.numel()
    log_a = concentration.log()
    mean = log_a - log_a.mean()
    variance = (1.0 / concentration) * (1.0 - 2.0 / num_topics) + (1.0 / concentration).sum() / num_topics**2
    return mean, variance


#: How the encoder reads a bag of words: raw counts (the original models), log(1 + counts), the
#: counts divided by the document's length (word frequencies), or "proportions": frequencies,
#: with log(1 + length) given to the posterior's log-variance alone, so that the topic means
#: see what a document is about and only their certainty sees how much evidence it holds.
ENCODER_INPUTS = ("counts", "log1p", "frequencies", "proportions")


def prepare_encoder_input(bow: Tensor, kind: str) -> Tensor:
    """What the encoder reads from a bag of words [B, V] (see ``ENCODER_INPUTS``)."""
    if kind == "counts":
        return bow
    if kind == "log1p":
        return torch.log1p(bow)
    if kind in ("frequencies", "proportions"):
        return bow / bow.sum(-1, keepdim=True).clamp_min(1.0)
    raise ValueError(f"encoder_input={kind!r} is unknown: choose one of {', '.join(ENCODER_INPUTS)}")


class NeuralTopicModel(nn.Module):
    """Shared plumbing: encode, sample, decode, and the hooks the estimator uses."""

    kind: str = ""

    def __init__(self, vocab_size: int, groups: GroupSpec, *, temperature: float, encoder_input: str = "counts"):
        super().__init__()
        if encoder_input not in ENCODER_INPUTS:
            raise ValueError(f"encoder_input={encoder_input!r} is unknown: choose one of {', '.join(ENCODER_INPUTS)}")
        self.vocab_size = int(vocab_size)
        self.groups = groups
        self.temperature = float(temperature)
        self.encoder_input = encoder_input

    # --- to be provided by each model ---------------------------------------------------
    def prior_parameters(self) -> list[Distribution]:
        raise NotImplementedError

    def code(self, samples: Sequence[Tensor]) -> Tensor:
        """The decoder's input [B, num_columns] built from the groups' samples."""
        raise NotImplementedError

    def decode(self, code: Tensor) -> Tensor:
        """log p(w | code), [B, V]."""
        raise NotImplementedError

    def topic_word_scores(self) -> Tensor:
        """[num_columns, V] scores that rank each topic's words (see docs/topics.md)."""
        raise NotImplementedError

    def representation(self, means: Sequence[Tensor]) -> Tensor:
        """What ``transform`` returns from the posterior means."""
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------
    def features(self, bow: Tensor) -> Tensor:
        """The encoder's hidden features (each model builds ``encoder`` and ``encoder_dropout``)."""
        return self.encoder_dropout(self.encoder(prepare_encoder_input(bow, self.encoder_input)))

    def evidence(self, bow: Tensor) -> Tensor | None:
        """What only the log-variances see: log(1 + length) [B, 1] for "proportions", else None."""
        return torch.log1p(bow.sum(-1, keepdim=True)) if self.encoder_input == "proportions" else None

    @property
    def evidence_features(self) -> int:
        return 1 if self.encoder_input == "proportions" else 0

    def encode(self, bow: Tensor) -> list[Distribution]:
        return self.posterior(self.features(bow), self.evidence(bow))

    def priors(self) -> list[Distribution]:
        return self.prior_parameters()

    def forward(self, bow: Tensor) -> ModelOutput:
        posteriors = self.encode(bow)
        samples = [q.rsample() for q in posteriors]
        log_word_probs = self.decode(self.code(samples))
        log_likelihood = (bow * log_word_probs).sum(-1)  # multinomial, up to the count's constant
        return ModelOutput(log_likelihood, posteriors, self.priors(), samples)

    @torch.no_grad()
    def posterior_moments(self, bow: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per group, the posterior's mean and variance for each document (no sampling)."""
        return self.posterior.moments(self.features(bow), self.evidence(bow))

    def _concrete_prior(self, size: int, like: Tensor) -> ExpRelaxedCategorical:
        temperature = torch.tensor(self.temperature, dtype=like.dtype, device=like.device)
        return ExpRelaxedCategorical(temperature, logits=like.new_zeros(size), validate_args=False)

    def _assemble(self, per_group: Sequence[Tensor], gaussian_columns: Tensor | None) -> Tensor:
        """Lay out the code [B, num_columns] in group order.

        Concrete groups contribute ``per_group[d]`` as it is (a point on the simplex); the
        Gaussian groups' columns are taken, in order, from ``gaussian_columns``.
        """
        sizes = [g.size for g in self.groups.gaussian]
        gaussian = iter(gaussian_columns.split(sizes, dim=1) if gaussian_columns is not None else ())
        return torch.cat([part if g.is_concrete else next(gaussian) for g, part in zip(self.groups, per_group)], dim=1)

    def _simplex_points(self, samples: Sequence[Tensor]) -> list[Tensor]:
        # Concrete samples live in log space (ExpRelaxedCategorical); the decoder takes the point.
        return [z.exp() if g.is_concrete else z for g, z in zip(self.groups, samples)]


def _mlp(sizes: Sequence[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), activation()]
    return nn.Sequential(*layers)


class ProdLDA(NeuralTopicModel):
    """ProdLDA with grouped latent topics (see the module docstring)."""

    kind = "prodlda"

    def __init__(
        self,
        vocab_size: int,
        groups: GroupSpec,
        *,
        hidden_sizes: Sequence[int] = (100, 100),
        dropout: float = 0.2,
        prior_concentration: float = 1.0,
        temperature: float = 0.66,
        encoder_input: str = "counts",
        posterior_norm: str = "none",
        word_shift: bool = False,
        init: str = "default",
        topic_dropout: float | None = None,
    ):
        super().__init__(vocab_size, groups, temperature=temperature, encoder_input=encoder_input)
        self.encoder = _mlp([vocab_size, *hidden_sizes], nn.Softplus)
        self.encoder_dropout = nn.Dropout(dropout)
        self.posterior = GroupedPosterior(
            hidden_sizes[-1], groups, batch_norm=True, temperature=temperature, norm=posterior_norm,
            evidence_features=self.evidence_features,
        )
        # Dropout on theta (the original's single keep_prob covers both): a topic dropped from
        # the code is replaced by a copy of it, so dropout here pays the model to learn themes
        # twice and keeps spare topics from collapsing (docs/analysis.md, "What keeps every topic on").
        self.topic_dropout = nn.Dropout(dropout if topic_dropout is None else topic_dropout)
        self.topic_words = nn.Linear(groups.num_columns, vocab_size, bias=False)  # W
        self.word_norm = nn.BatchNorm1d(vocab_size, affine=False)
        # The original's decoder batch-norm learns a shift per word (tf.contrib.layers.batch_norm
        # has center=True): a background log-frequency that every topic shares, so that W holds
        # only what the topics change.
        self.word_shift = nn.Parameter(torch.zeros(vocab_size)) if word_shift else None
        if init == "xavier":  # the original's xavier_init for every weight, zero biases
            for layer in self.modules():
                if isinstance(layer, nn.Linear) and layer is not self.posterior.log_var:
                    nn.init.xavier_uniform_(layer.weight)
                    if layer.bias is not None:
                        nn.init.zeros_(layer.bias)
        elif init != "default":
            raise ValueError(f"init={init!r} is unknown: choose 'default' or 'xavier'")
        num_gaussian = groups.num_gaussian_dims
        if num_gaussian:
            mean, variance = dirichlet_laplace_prior(torch.full((num_gaussian,), float(prior_concentration)))
        else:
            mean, variance = torch.zeros(0), torch.ones(0)
        self.register_buffer("prior_loc", mean)
        self.register_buffer("prior_scale", variance.sqrt())

    def prior_parameters(self) -> list[Distribution]:
        priors: list[Distribution] = []
        sizes = [g.size for g in self.groups.gaussian]
        gaussian = iter(zip(self.prior_loc.split(sizes), self.prior_scale.split(sizes)))
        for group in self.groups:
            if group.is_concrete:
                priors.append(self._concrete_prior(group.size, self.prior_loc))
            else:
                loc, scale = next(gaussian)
                priors.append(Normal(loc, scale, validate_args=False))
        return priors

    def _proportions(self, gaussian_parts: Sequence[Tensor]) -> Tensor | None:
        # theta = softmax over ALL Gaussian topics of all groups: the groups share one simplex.
        return F.softmax(torch.cat(list(gaussian_parts), dim=1), dim=1) if gaussian_parts else None

    def code(self, samples: Sequence[Tensor]) -> Tensor:
        gaussian_parts = [z for g, z in zip(self.groups, samples) if not g.is_concrete]
        return self._assemble(self._simplex_points(samples), self._proportions(gaussian_parts))

    def decode(self, code: Tensor) -> Tensor:
        logits = self.word_norm(self.topic_words(self.topic_dropout(code)))
        if self.word_shift is not None:
            logits = logits + self.word_shift
        return F.log_softmax(logits, dim=-1)

    @torch.no_grad()
    def topic_word_scores(self) -> Tensor:
        # What the decoder produces for one topic alone: softmax(BN(e_k W) + b) with the
        # batch-norm's running statistics. Ranking raw columns of W would ignore the per-word
        # normalization.
        one_hot = torch.eye(self.groups.num_columns, device=self.prior_loc.device)
        logits = self.topic_words(one_hot)
        normed = F.batch_norm(
            logits, self.word_norm.running_mean, self.word_norm.running_var, training=False, eps=self.word_norm.eps
        )
        if self.word_shift is not None:
            normed = normed + self.word_shift
        return F.log_softmax(normed, dim=-1)

    def representation(self, means: Sequence[Tensor]) -> Tensor:
        gaussian_parts = [m for g, m in zip(self.groups, means) if not g.is_concrete]
        return self._assemble(means, self._proportions(gaussian_parts))


#: Added to NVDM's posterior variances (see ``NVDM.__init__``).
NVDM_VARIANCE_FLOOR = 1e-4


class NVDM(NeuralTopicModel):
    """NVDM with grouped latent topics (see the module docstring)."""

    kind = "nvdm"

    def __init__(
        self,
        vocab_size: int,
        groups: GroupSpec,
        *,
        hidden_sizes: Sequence[int] = (500,),
        dropout: float = 0.0,
        temperature: float = 0.66,
        encoder_input: str = "counts",
    ):
        super().__init__(vocab_size, groups, temperature=temperature, encoder_input=encoder_input)
        self.encoder = _mlp([vocab_size, *hidden_sizes], nn.ReLU)
        self.encoder_dropout = nn.Dropout(dropout)
        # NVDM feeds raw counts to its encoder, and one very long document (thousands of
        # tokens) can drive a log-variance towards -100: 1 / sigma then overflows float32 in the
        # estimator's pairwise densities and training stops on NaN. A floor of 1e-4 on the
        # variance (scvi-tools' var_eps) keeps sigma >= 0.01.
        self.posterior = GroupedPosterior(
            hidden_sizes[-1], groups, batch_norm=False, temperature=temperature, variance_floor=NVDM_VARIANCE_FLOOR,
            evidence_features=self.evidence_features,
        )
        self.decoder = nn.Linear(groups.num_columns, vocab_size)  # R and b

    def prior_parameters(self) -> list[Distribution]:
        like = self.decoder.bias
        priors: list[Distribution] = []
        for group in self.groups:
            if group.is_concrete:
                priors.append(self._concrete_prior(group.size, like))
            else:
                priors.append(Normal(like.new_zeros(group.size), like.new_ones(group.size), validate_args=False))
        return priors

    def code(self, samples: Sequence[Tensor]) -> Tensor:
        gaussian = [z for g, z in zip(self.groups, samples) if not g.is_concrete]
        return self._assemble(self._simplex_points(samples), torch.cat(gaussian, dim=1) if gaussian else None)

    def decode(self, code: Tensor) -> Tensor:
        return F.log_softmax(self.decoder(code), dim=-1)

    @torch.no_grad()
    def topic_word_scores(self) -> Tensor:
        # The decoder is affine before its softmax, so switching topic k on (code e_k instead of
        # 0) shifts every word's log-probability by R[w, k] minus one shared constant: the
        # lift log p(w | e_k) - log p(w | 0) ranks words exactly as the topic's effect does,
        # without the background frequencies in b that would put the same words on top of
        # every topic.
        one_hot = torch.eye(self.groups.num_columns, device=self.decoder.weight.device)
        baseline = self.decode(torch.zeros(1, self.groups.num_columns, device=one_hot.device))
        return self.decode(one_hot) - baseline

    def representation(self, means: Sequence[Tensor]) -> Tensor:
        return torch.cat(list(means), dim=1)


#: Per-model defaults the estimator falls back on (learning rate, Adam betas, layer sizes).
#: ProdLDA's architecture options (NVDM has none of them): ``build_model(architecture=)``.
PRODLDA_ARCHITECTURE = ("posterior_norm", "word_shift", "init", "topic_dropout")

MODEL_DEFAULTS: dict[str, dict] = {
    "prodlda": {
        "lr": 2e-3, "adam_betas": (0.99, 0.999), "hidden_sizes": (100, 100), "dropout": 0.2,
        "posterior_norm": "shift", "word_shift": True, "init": "default", "encoder_input": "log1p",
        "topic_dropout": None,  # None: the same as dropout, as in the original
        # measured on 20 Newsgroups over 3 seeds (docs/analysis.md): at 64 documents per step
        # HFVAE's topics are more coherent, more diverse and better aligned with transform than
        # at the original's 200, and its held-out perplexity is lower
        "batch_size": 64,
        # measured on 20 Newsgroups over 3 seeds (docs/analysis.md, "A warm-up of gamma"): half of
        # training with the TC within groups weighed as in the ELBO keeps theta from following
        # document length as much (max |corr| 0.62 against 0.82) and the topics more diverse
        # (0.62 against 0.55), at the same coherence
        "gamma_warmup": 0.5,
    },
    # NVDM at 64 fits the held-out posts far worse (perplexity 2,545 and 9,440 against 1,126 and 1,208)
    "nvdm": {
        "lr": 5e-4, "adam_betas": (0.9, 0.999), "hidden_sizes": (500,), "dropout": 0.0, "encoder_input": "counts", "batch_size": 200,
        "gamma_warmup": 0.0,  # not measured for NVDM
    },
}


def build_model(
    kind: str,
    vocab_size: int,
    groups: GroupSpec,
    *,
    hidden_sizes: Sequence[int] | None = None,
    dropout: float | None = None,
    prior_concentration: float = 1.0,
    temperature: float = 0.66,
    encoder_input: str = "counts",
    architecture: dict | None = None,
) -> NeuralTopicModel:
    """Construct a model by name ('prodlda' or 'nvdm').

    ``architecture`` holds ProdLDA's ``posterior_norm``, ``word_shift``, ``init`` and
    ``topic_dropout`` (NVDM has none of them); left out, each takes the value in
    ``MODEL_DEFAULTS`` (a ``topic_dropout`` of None is ``dropout``).
    """
    if kind not in MODEL_DEFAULTS:
        raise ValueError(f"model={kind!r} is unknown: choose one of {', '.join(MODEL_DEFAULTS)}")
    defaults = MODEL_DEFAULTS[kind]
    hidden_sizes = tuple(hidden_sizes) if hidden_sizes is not None else defaults["hidden_sizes"]
    dropout = defaults["dropout"] if dropout is None else dropout
    if kind == "prodlda":
        options = {name: defaults[name] for name in PRODLDA_ARCHITECTURE}
        options.update(architecture or {})
        return ProdLDA(
            vocab_size,
            groups,
            hidden_sizes=hidden_sizes,
            dropout=dropout,
            prior_concentration=prior_concentration,
            temperature=temperature,
            encoder_input=encoder_input,
            **options,
        )
    return NVDM(
        vocab_size, groups, hidden_sizes=hidden_sizes, dropout=dropout, temperature=temperature, encoder_input=encoder_input
    )
