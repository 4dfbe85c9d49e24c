"""Tests of topicvae.objective.terms against objective.md, recomputed independently in float64.

Every reference quantity here is computed with explicit Python/numpy loops in float64
(scipy.stats.norm.logpdf for Gaussian dimensions, a hand-written ExpConcrete log density
from Maddison et al. 2017 for Concrete groups), following objective.md and never the formulas
of the implementation under test. The inputs (parameters and samples) are drawn in numpy and
handed to both sides bit for bit.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from torch.distributions import Normal
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

import topicvae.objective.terms as objective_module
from topicvae.latent.groups import GroupSpec
from topicvae.objective.terms import LossTerms, ObjectiveWeights, hfvae_objective
from topicvae.objective.marginals import LogMarginals, log_marginals

SEEDS = [0, 1, 2]
ARBITRARY = dict(alpha=0.7, beta=0.1, gamma=4.0, delta=1.3)


# =============================================================================================
# Independent float64 reference
# =============================================================================================
def concrete_log_density(y: np.ndarray, logits: np.ndarray, temperature: float) -> float:
    """ExpConcrete log density of a log-space point y (logsumexp(y) = 0), Maddison et al. 2017.

    log p(y) = log((K-1)!) + (K-1) log(lam) + sum_k (a_k - lam y_k) - K log sum_k exp(a_k - lam y_k)
    """
    y = np.asarray(y, dtype=np.float64)
    a = np.asarray(logits, dtype=np.float64)
    k = y.shape[0]
    scores = [float(a[i]) - temperature * float(y[i]) for i in range(k)]
    top = max(scores)
    log_sum = top + math.log(sum(math.exp(s - top) for s in scores))
    return math.lgamma(k) + (k - 1) * math.log(temperature) + sum(scores) - k * log_sum


def log_sum_exp(values) -> float:
    values = [float(v) for v in values]
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def stratified_weight(b: int, b_other: int, batch: int, n: int) -> float:
    """w[b, b'] of objective.md: 1/N on the diagonal, (N-1)/(N(B-1)) off it."""
    if b == b_other:
        return 1.0 / n
    return (n - 1) / (n * (batch - 1))


def log_mixture(per_item, b: int, n: int) -> float:
    """log sum_b' w[b, b'] exp(per_item[b'])  (per_item: the log densities at z^b under x^b')."""
    batch = len(per_item)
    return log_sum_exp(math.log(stratified_weight(b, bp, batch, n)) + per_item[bp] for bp in range(batch))


@dataclass
class Group:
    kind: str  # "gaussian" | "concrete"
    size: int  # dims (Gaussian) or categories (Concrete)
    params: dict = field(default_factory=dict)  # loc/scale or logits (numpy, [B, size])
    prior: dict = field(default_factory=dict)  # loc/scale [size] or logits [size]
    z: np.ndarray | None = None  # [B, size]; log space for Concrete

    @property
    def num_variables(self) -> int:
        return self.size if self.kind == "gaussian" else 1


@dataclass
class Problem:
    groups: list[Group]
    n: int
    temperature: float
    loglik: np.ndarray  # [B]

    @property
    def batch(self) -> int:
        return self.loglik.shape[0]

    @property
    def num_variables(self) -> int:
        return sum(g.num_variables for g in self.groups)

    def variable_groups(self) -> list[int]:
        return [d for d, g in enumerate(self.groups) for _ in range(g.num_variables)]


def sample_concrete(rng: np.random.Generator, logits: np.ndarray, temperature: float) -> np.ndarray:
    u = rng.uniform(1e-12, 1.0, size=logits.shape)
    scores = (logits - np.log(-np.log(u))) / temperature
    top = scores.max(axis=-1, keepdims=True)
    return scores - (top + np.log(np.exp(scores - top).sum(axis=-1, keepdims=True)))


def make_problem(
    seed: int,
    batch: int = 8,
    n: int = 50,
    layout=(("gaussian", 3), ("concrete", 4), ("gaussian", 5)),
    temperature: float = 0.5,
    loc_spread: float = 1.0,
    log_scale_range=(-1.0, 0.5),
    shared: bool = False,
) -> Problem:
    """Random posteriors/priors and their samples; Concrete in the middle to catch index bugs."""
    rng = np.random.default_rng(seed)
    rows = 1 if shared else batch
    groups = []
    for kind, size in layout:
        if kind == "gaussian":
            loc = np.broadcast_to(loc_spread * rng.standard_normal((rows, size)), (batch, size)).copy()
            scale = np.broadcast_to(np.exp(rng.uniform(*log_scale_range, size=(rows, size))), (batch, size)).copy()
            z = loc + scale * rng.standard_normal((batch, size))
            prior = dict(loc=0.3 * rng.standard_normal(size), scale=np.exp(rng.uniform(-0.3, 0.3, size=size)))
            groups.append(Group(kind, size, dict(loc=loc, scale=scale), prior, z))
        else:
            logits = np.broadcast_to(1.5 * rng.standard_normal((rows, size)), (batch, size)).copy()
            z = sample_concrete(rng, logits, temperature)
            prior = dict(logits=0.5 * rng.standard_normal(size))
            groups.append(Group(kind, size, dict(logits=logits), prior, z))
    loglik = -50.0 + 5.0 * rng.standard_normal(batch)
    return Problem(groups, n, temperature, loglik)


def reference_pairwise(p: Problem) -> np.ndarray:
    """lq[b, b', v] = log q(z^b_v | x^b'), explicit triple loop in float64."""
    batch = p.batch
    out = np.empty((batch, batch, p.num_variables))
    for b in range(batch):
        for bp in range(batch):
            v = 0
            for g in p.groups:
                if g.kind == "gaussian":
                    for e in range(g.size):
                        out[b, bp, v] = norm.logpdf(g.z[b, e], loc=g.params["loc"][bp, e], scale=g.params["scale"][bp, e])
                        v += 1
                else:
                    out[b, bp, v] = concrete_log_density(g.z[b], g.params["logits"][bp], p.temperature)
                    v += 1
    return out


def reference_log_prior(p: Problem) -> np.ndarray:
    """log p(z^b_v), shape [B, V]."""
    out = np.empty((p.batch, p.num_variables))
    for b in range(p.batch):
        v = 0
        for g in p.groups:
            if g.kind == "gaussian":
                for e in range(g.size):
                    out[b, v] = norm.logpdf(g.z[b, e], loc=g.prior["loc"][e], scale=g.prior["scale"][e])
                    v += 1
            else:
                out[b, v] = concrete_log_density(g.z[b], g.prior["logits"], p.temperature)
                v += 1
    return out


def reference_marginals(p: Problem, lq: np.ndarray | None = None) -> dict[str, np.ndarray]:
    lq = reference_pairwise(p) if lq is None else lq
    batch, num_v, n = p.batch, p.num_variables, p.n
    vg = p.variable_groups()
    num_d = len(p.groups)
    conditional = np.array([[lq[b, b, v] for v in range(num_v)] for b in range(batch)])
    variable = np.empty((batch, num_v))
    group = np.empty((batch, num_d))
    joint = np.empty(batch)
    for b in range(batch):
        for v in range(num_v):
            variable[b, v] = log_mixture([lq[b, bp, v] for bp in range(batch)], b, n)
        for d in range(num_d):
            per_item = [sum(lq[b, bp, v] for v in range(num_v) if vg[v] == d) for bp in range(batch)]
            group[b, d] = log_mixture(per_item, b, n)
        per_item = [sum(lq[b, bp, v] for v in range(num_v)) for bp in range(batch)]
        joint[b] = log_mixture(per_item, b, n)
    return dict(conditional=conditional, variable=variable, group=group, joint=joint)


def reference_terms(p: Problem, weights=None) -> dict:
    """Every named term of objective.md by explicit loops (batch means)."""
    w = dict(alpha=1.0, beta=1.0, gamma=1.0, delta=1.0) if weights is None else weights
    m = reference_marginals(p)
    lp = reference_log_prior(p)
    batch, num_v = p.batch, p.num_variables
    vg = p.variable_groups()
    num_d = len(p.groups)
    log_q_cond = [sum(m["conditional"][b, v] for v in range(num_v)) for b in range(batch)]
    log_p = [sum(lp[b, v] for v in range(num_v)) for b in range(batch)]
    recon = sum(p.loglik) / batch
    mi = sum(log_q_cond[b] - m["joint"][b] for b in range(batch)) / batch
    tc_between = sum(m["joint"][b] - sum(m["group"][b, d] for d in range(num_d)) for b in range(batch)) / batch
    tc_within = np.array(
        [
            sum(m["group"][b, d] - sum(m["variable"][b, v] for v in range(num_v) if vg[v] == d) for b in range(batch))
            / batch
            for d in range(num_d)
        ]
    )
    kl = np.array([sum(m["variable"][b, v] - lp[b, v] for b in range(batch)) / batch for v in range(num_v)])
    tc_single = sum(m["joint"][b] - sum(m["variable"][b, v] for v in range(num_v)) for b in range(batch)) / batch
    elbo = sum(p.loglik[b] - log_q_cond[b] + log_p[b] for b in range(batch)) / batch
    # objective.md: L = LL + alpha*(2) + beta*(A) + gamma*sum_d (i)_d + delta*sum (ii), factorized priors
    objective = (
        recon
        + w["alpha"] * (-mi)
        + w["beta"] * (-tc_between)
        + w["gamma"] * sum(-t for t in tc_within)
        + w["delta"] * sum(-k for k in kl)
    )
    return dict(
        reconstruction=recon,
        mutual_information=mi,
        tc_between=tc_between,
        tc_within=tc_within,
        dimwise_kl=kl,
        tc_single=tc_single,
        elbo=elbo,
        objective=objective,
        marginals=m,
    )


# =============================================================================================
# Torch side
# =============================================================================================
@dataclass
class TorchInputs:
    log_likelihood: torch.Tensor
    posteriors: list
    priors: list
    samples: list
    leaves: dict  # name -> leaf tensor (only those with requires_grad)


def to_torch(p: Problem, dtype=torch.float64, params_grad=False, samples_grad=False) -> TorchInputs:
    def t(x, grad=False):
        return torch.tensor(np.asarray(x), dtype=dtype, requires_grad=grad)

    temperature = torch.tensor(p.temperature, dtype=dtype)
    posteriors, priors, samples, leaves = [], [], [], {}
    for d, g in enumerate(p.groups):
        if g.kind == "gaussian":
            loc, scale = t(g.params["loc"], params_grad), t(g.params["scale"], params_grad)
            posteriors.append(Normal(loc, scale))
            priors.append(Normal(t(g.prior["loc"]), t(g.prior["scale"])))
            if params_grad:
                leaves[f"loc{d}"], leaves[f"scale{d}"] = loc, scale
        else:
            logits = t(g.params["logits"], params_grad)
            posteriors.append(ExpRelaxedCategorical(temperature, logits=logits))
            priors.append(ExpRelaxedCategorical(temperature, logits=t(g.prior["logits"])))
            if params_grad:
                leaves[f"logits{d}"] = logits
        z = t(g.z, samples_grad)
        samples.append(z)
        if samples_grad:
            leaves[f"z{d}"] = z
    return TorchInputs(t(p.loglik), posteriors, priors, samples, leaves)


def run_objective(p: Problem, weights=None, dtype=torch.float64, block_elements=None, **kw) -> tuple[LossTerms, TorchInputs]:
    inputs = to_torch(p, dtype=dtype, **kw)
    extra = {} if block_elements is None else dict(block_elements=block_elements)
    terms = hfvae_objective(
        inputs.log_likelihood, inputs.posteriors, inputs.priors, inputs.samples, p.n, weights, **extra
    )
    return terms, inputs


def close(actual, expected, atol=1e-10, rtol=1e-12):
    actual = np.asarray(actual.detach().cpu().double().numpy() if torch.is_tensor(actual) else actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol)


# =============================================================================================
# 0. The reference itself: the hand-written Concrete density is a density
# =============================================================================================
def test_reference_concrete_density_integrates_to_one_for_two_categories():
    # For K = 2 the ExpConcrete density is a density in s = y0 - y1 (the log-odds), where
    # y = (log sigmoid(s), log sigmoid(-s)); s itself is logistic: check both.
    logits = np.array([0.3, -0.8])
    temperature = 0.7
    ss = np.linspace(-80.0, 80.0, 16001)
    ys = [np.array([-math.log1p(math.exp(-s)) if s > 0 else s - math.log1p(math.exp(s)),
                    -math.log1p(math.exp(s)) if s < 0 else -s - math.log1p(math.exp(-s))]) for s in ss]
    vals = np.array([concrete_log_density(y, logits, temperature) for y in ys])
    total = float(np.sum(np.exp(vals)) * (ss[1] - ss[0]))
    assert total == pytest.approx(1.0, abs=1e-6)
    # logistic density of s with location (a0 - a1) / lam and scale 1 / lam
    t = temperature * ss - (logits[0] - logits[1])
    logistic = np.log(temperature) - t - 2 * np.log1p(np.exp(-t))
    np.testing.assert_allclose(vals[4000:12000], logistic[4000:12000], atol=1e-10)


# =============================================================================================
# 1. The stratified estimator against an explicit double loop (mixed groups)
# =============================================================================================
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,n", [(6, 40), (7, 8), (10, 1000), (1, 5)])
def test_log_marginals_match_explicit_double_loop(seed, batch, n):
    p = make_problem(seed, batch=batch, n=n)
    ref = reference_marginals(p)
    inputs = to_torch(p)
    got = log_marginals(inputs.posteriors, inputs.samples, n)
    assert isinstance(got, LogMarginals)
    close(got.log_q_conditional, ref["conditional"])
    close(got.log_q_variable, ref["variable"])
    close(got.log_q_group, ref["group"])
    close(got.log_q_joint, ref["joint"])
    assert got.group_index.tolist() == p.variable_groups()


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_log_marginals_concrete_low_and_high_temperature(seed):
    for temperature in (0.1, 2.0):
        p = make_problem(seed, batch=6, n=30, layout=(("concrete", 5), ("gaussian", 2), ("concrete", 3)), temperature=temperature)
        ref = reference_marginals(p)
        inputs = to_torch(p)
        got = log_marginals(inputs.posteriors, inputs.samples, p.n)
        close(got.log_q_conditional, ref["conditional"])
        close(got.log_q_variable, ref["variable"])
        close(got.log_q_group, ref["group"])
        close(got.log_q_joint, ref["joint"])


def test_group_index_matches_group_spec_layout():
    spec = GroupSpec.parse("3,4c,5")
    p = make_problem(0, batch=4, n=10)  # layout gaussian 3, concrete 4, gaussian 5
    inputs = to_torch(p)
    got = log_marginals(inputs.posteriors, inputs.samples, p.n)
    assert got.group_index.tolist() == spec.variable_group_index().tolist()
    assert got.log_q_variable.shape == (4, spec.num_variables)
    assert got.log_q_group.shape == (4, len(spec))


# =============================================================================================
# 2. Identity 2: B = N, each item once -> exact marginal (1/N) sum_n q(z | x^n)
# =============================================================================================
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [2, 5, 9])
def test_identity2_full_batch_gives_exact_marginal(seed, n):
    p = make_problem(seed, batch=n, n=n)
    lq = reference_pairwise(p)
    vg = p.variable_groups()
    inputs = to_torch(p)
    got = log_marginals(inputs.posteriors, inputs.samples, n)
    for b in range(n):
        # brute force: log( (1/N) sum_n q(z^b | x^n) ), no stratification weights at all
        joint = math.log(sum(math.exp(lq[b, m].sum()) for m in range(n)) / n)
        assert float(got.log_q_joint[b]) == pytest.approx(joint, abs=1e-10, rel=1e-12)
        for d in range(len(p.groups)):
            group = math.log(sum(math.exp(sum(lq[b, m, v] for v in range(len(vg)) if vg[v] == d)) for m in range(n)) / n)
            assert float(got.log_q_group[b, d]) == pytest.approx(group, abs=1e-10, rel=1e-12)
        for v in range(len(vg)):
            var = math.log(sum(math.exp(lq[b, m, v]) for m in range(n)) / n)
            assert float(got.log_q_variable[b, v]) == pytest.approx(var, abs=1e-10, rel=1e-12)


# =============================================================================================
# 3. Identity 1: all weights 1 -> ordinary ELBO, batch by batch
# =============================================================================================
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,n", [(6, 20), (9, 500), (8, 8)])
def test_identity1_unit_weights_give_elbo(seed, batch, n):
    p = make_problem(seed, batch=batch, n=n)
    ref = reference_terms(p)
    # the ELBO straight from its definition, without any marginal
    lp = reference_log_prior(p)
    lq = reference_pairwise(p)
    elbo = sum(p.loglik[b] - sum(lq[b, b, v] for v in range(p.num_variables)) + lp[b].sum() for b in range(batch)) / batch
    assert ref["elbo"] == pytest.approx(elbo, abs=1e-12)
    for weights in (None, ObjectiveWeights(1.0, 1.0, 1.0, 1.0), ObjectiveWeights.preset("vae")):
        terms, _ = run_objective(p, weights)
        close(terms.objective, elbo)
        close(terms.elbo, elbo)
        close(terms.loss, -elbo)


# =============================================================================================
# 4. Identity 3: beta = gamma -> one-level total correlation over all dimensions
# =============================================================================================
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("b", [0.5, 1.0, 6.0])
def test_identity3_equal_beta_gamma_is_single_level_tc(seed, b):
    p = make_problem(seed, batch=7, n=60)
    m = reference_marginals(p)
    # single-level TC by its own definition: E[log q^(z) - sum_{d,e} log q^(z_de)]
    tc_single = sum(m["joint"][i] - sum(m["variable"][i, v] for v in range(p.num_variables)) for i in range(p.batch)) / p.batch
    weights = ObjectiveWeights(alpha=0.8, beta=b, gamma=b, delta=1.2)
    terms, _ = run_objective(p, weights)
    combined = weights.beta * terms.tc_between + weights.gamma * terms.tc_within.sum()
    close(combined, b * tc_single)
    # and the whole objective is the beta-TCVAE form
    recon = p.loglik.mean()
    ref = reference_terms(p)
    close(terms.objective, recon - 0.8 * ref["mutual_information"] - b * tc_single - 1.2 * ref["dimwise_kl"].sum())
    # the preset of the same name
    tc_terms, _ = run_objective(p, ObjectiveWeights.preset("beta-tcvae", beta=b))
    close(tc_terms.objective, recon - ref["mutual_information"] - b * tc_single - ref["dimwise_kl"].sum())


# =============================================================================================
# 5. Identity 4: I(x;z) <= log N; separated posteriors reach it; x-independent posteriors give 0
# =============================================================================================
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 12),
    extra=st.integers(0, 200),
    log_spread=st.floats(-3.0, 3.0),
)
def test_identity4_mutual_information_never_exceeds_log_n(seed, batch, extra, log_spread):
    n = batch + extra
    p = make_problem(seed, batch=batch, n=n, loc_spread=10.0**log_spread)
    terms, inputs = run_objective(p)
    assert float(terms.mutual_information) <= math.log(n) + 1e-12
    marg = log_marginals(inputs.posteriors, inputs.samples, n)
    # per item, per group and per variable: q^(z^b) >= q(z^b | x^b) / N
    per_item = marg.log_q_conditional.sum(1) - marg.log_q_joint
    assert float(per_item.max()) <= math.log(n) + 1e-12
    per_group = marg.sum_over_groups(marg.log_q_conditional) - marg.log_q_group
    assert float(per_group.max()) <= math.log(n) + 1e-12
    assert float((marg.log_q_conditional - marg.log_q_variable).max()) <= math.log(n) + 1e-12


def separated_problem(seed: int, batch: int, n: int, layout) -> Problem:
    """Very narrow posteriors, far apart in every dimension: q(z^b | x^b') underflows to 0."""
    p = make_problem(seed, batch=batch, n=n, layout=layout)
    for g in p.groups:
        if g.kind == "gaussian":
            rng = np.random.default_rng(seed + 100)
            loc = 1000.0 * np.arange(batch)[:, None] + rng.uniform(-1, 1, size=(batch, g.size))
            scale = np.full((batch, g.size), 1e-2)
            g.params = dict(loc=loc, scale=scale)
            g.z = loc + scale * rng.standard_normal((batch, g.size))
    return p


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,n", [(5, 5), (8, 100), (6, 10**6)])
def test_identity4_separated_posteriors_reach_log_n(seed, batch, n):
    p = separated_problem(seed, batch, n, (("gaussian", 3), ("concrete", 4), ("gaussian", 2)))
    terms, _ = run_objective(p)
    mi = float(terms.mutual_information)
    assert mi <= math.log(n) + 1e-12
    assert mi == pytest.approx(math.log(n), abs=1e-10)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_separated_gaussian_groups_total_correlations(seed):
    # Every dimension alone identifies the item, so every marginal is q(.|x^b)/N:
    # TC_between = (D-1) log N and TC_within_d = (E_d - 1) log N.
    n = 77
    p = separated_problem(seed, 6, n, (("gaussian", 3), ("gaussian", 1), ("gaussian", 4)))
    terms, _ = run_objective(p)
    close(terms.tc_between, 2 * math.log(n))
    close(terms.tc_within, np.array([2, 0, 3]) * math.log(n))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,n", [(2, 2), (6, 40), (10, 10**5)])
def test_identity4_posterior_ignoring_x_gives_zero_information(seed, batch, n):
    # q(z|x^b') is the same for every b', so q^(z^b) = q(z^b|x^b) * (1/N + (B-1)(N-1)/(N(B-1)))
    # = q(z^b|x^b) exactly: I = 0, and the marginals factorize like q(z|x): both TCs are 0 too.
    p = make_problem(seed, batch=batch, n=n, shared=True)
    terms, inputs = run_objective(p)
    assert abs(float(terms.mutual_information)) < 1e-12
    assert abs(float(terms.tc_between)) < 1e-12
    assert np.abs(terms.tc_within.numpy()).max() < 1e-12
    lp = reference_log_prior(p)
    lq = reference_pairwise(p)
    kl = [sum(lq[b, b, v] - lp[b, v] for b in range(batch)) / batch for v in range(p.num_variables)]
    close(terms.dimwise_kl, kl)
    marg = log_marginals(inputs.posteriors, inputs.samples, n)
    close(marg.log_q_variable, marg.log_q_conditional, atol=1e-12)


# =============================================================================================
# 6. Each named term against the loop; the weighted objective for arbitrary weights
# =============================================================================================
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "weights",
    [ARBITRARY, dict(alpha=0.0, beta=2.0, gamma=2.0, delta=2.0), dict(alpha=3.0, beta=0.0, gamma=0.25, delta=0.5)],
    ids=["hfvae-like", "infovae-like", "misc"],
)
def test_named_terms_and_weighted_objective(seed, weights):
    p = make_problem(seed, batch=8, n=123)
    ref = reference_terms(p, weights)
    terms, _ = run_objective(p, ObjectiveWeights(**weights))
    close(terms.reconstruction, ref["reconstruction"])
    close(terms.mutual_information, ref["mutual_information"])
    close(terms.tc_between, ref["tc_between"])
    assert terms.tc_within.shape == (len(p.groups),)
    close(terms.tc_within, ref["tc_within"])
    assert terms.dimwise_kl.shape == (p.num_variables,)
    close(terms.dimwise_kl, ref["dimwise_kl"])
    close(terms.elbo, ref["elbo"])
    close(terms.objective, ref["objective"])
    close(terms.loss, -ref["objective"])
    # a Concrete group is ONE variable: its within-group TC is exactly zero
    assert float(terms.tc_within[1]) == 0.0
    scalars = terms.scalars()
    assert set(scalars) == {"loss", "reconstruction", "mutual_information", "tc_between", "tc_within", "dimwise_kl", "elbo"}
    assert all(isinstance(v, float) for v in scalars.values())
    assert scalars["loss"] == pytest.approx(-ref["objective"], abs=1e-10)
    assert scalars["tc_within"] == pytest.approx(sum(ref["tc_within"]), abs=1e-10)
    assert scalars["dimwise_kl"] == pytest.approx(sum(ref["dimwise_kl"]), abs=1e-10)
    assert scalars["mutual_information"] == pytest.approx(ref["mutual_information"], abs=1e-10)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_concrete_only_and_single_gaussian_dim_groups(seed):
    # Groups made of one variable each: every within-group TC is exactly 0.
    p = make_problem(seed, batch=6, n=30, layout=(("concrete", 3), ("gaussian", 1), ("concrete", 6)))
    ref = reference_terms(p, ARBITRARY)
    terms, _ = run_objective(p, ObjectiveWeights(**ARBITRARY))
    assert terms.tc_within.tolist() == [0.0, 0.0, 0.0]
    close(terms.tc_between, ref["tc_between"])
    close(terms.mutual_information, ref["mutual_information"])
    close(terms.dimwise_kl, ref["dimwise_kl"])
    close(terms.objective, ref["objective"])


# =============================================================================================
# 7. Blocking (with checkpointing under autograd) equals one block, values and gradients
# =============================================================================================
def _all_outputs(terms: LossTerms) -> dict[str, torch.Tensor]:
    return dict(
        objective=terms.objective,
        reconstruction=terms.reconstruction,
        mutual_information=terms.mutual_information,
        tc_between=terms.tc_between,
        tc_within=terms.tc_within,
        dimwise_kl=terms.dimwise_kl,
        elbo=terms.elbo,
    )


#: Keyword that makes every block recompute in backward (activation checkpointing), where the
#: implementation separates that memory budget from the block size; empty where it does not.
CHECKPOINT_EVERY_BLOCK = (
    {"memory_elements": 0} if "memory_elements" in inspect.signature(hfvae_objective).parameters else {}
)


@pytest.fixture
def checkpoint_calls(monkeypatch):
    """Count calls of the module's activation-checkpoint function (None if it has none)."""
    if not hasattr(objective_module, "checkpoint"):
        return None
    calls = []
    real = objective_module.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(objective_module, "checkpoint", counting)
    return calls


def _loss_and_grads(p: Problem, block_elements, *, samples_grad: bool, **extra):
    inputs = to_torch(p, params_grad=True, samples_grad=samples_grad)
    samples = inputs.samples
    log_likelihood = inputs.log_likelihood
    if samples_grad:  # make the reconstruction depend on the samples too
        log_likelihood = log_likelihood - 0.1 * sum((z**2).sum(-1) for z in samples)
    terms = hfvae_objective(
        log_likelihood, inputs.posteriors, inputs.priors, samples, p.n, ObjectiveWeights(**ARBITRARY),
        block_elements=block_elements, **extra,
    )
    names = sorted(inputs.leaves)
    grads = torch.autograd.grad(terms.loss, [inputs.leaves[k] for k in names])
    return terms, dict(zip(names, grads))


@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("rows_per_block", [1, 3])
@pytest.mark.parametrize("samples_grad", [True, False])
@pytest.mark.parametrize("checkpointed", [True, False], ids=["checkpoint", "plain"])
def test_blocking_matches_single_block_values_and_gradients(seed, rows_per_block, samples_grad, checkpointed, checkpoint_calls):
    batch = 10
    p = make_problem(seed, batch=batch, n=90)
    num_v = p.num_variables
    one_terms, one_grads = _loss_and_grads(p, 2**30, samples_grad=samples_grad)
    if checkpoint_calls is not None:
        checkpoint_calls.clear()
    extra = CHECKPOINT_EVERY_BLOCK if checkpointed else {}
    blk_terms, blk_grads = _loss_and_grads(p, rows_per_block * batch * num_v, samples_grad=samples_grad, **extra)
    if checkpointed and samples_grad and checkpoint_calls is not None:
        # many row blocks, each checkpointed under autograd
        assert len(checkpoint_calls) >= math.ceil(batch / rows_per_block)
    for name, value in _all_outputs(one_terms).items():
        close(_all_outputs(blk_terms)[name], value.detach().numpy(), atol=1e-10)
    expected = {"loc0", "scale0", "logits1", "loc2", "scale2"} | ({"z0", "z1", "z2"} if samples_grad else set())
    assert set(one_grads) == expected
    for name in expected:
        assert torch.isfinite(one_grads[name]).all()
        assert one_grads[name].abs().max() > 0, name
        close(blk_grads[name], one_grads[name].numpy(), atol=1e-10)


@pytest.mark.parametrize("block_elements", [1, 37, 200])
def test_blocking_log_marginals_no_grad(block_elements):
    p = make_problem(5, batch=9, n=31)
    ref = reference_marginals(p)
    inputs = to_torch(p)
    with torch.no_grad():
        got = log_marginals(inputs.posteriors, inputs.samples, p.n, block_elements=block_elements, **CHECKPOINT_EVERY_BLOCK)
    close(got.log_q_variable, ref["variable"])
    close(got.log_q_group, ref["group"])
    close(got.log_q_joint, ref["joint"])


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_blocking_gradients_with_rsample_through_parameters(seed, checkpoint_calls):
    # The training path: samples drawn with rsample, so they carry the parameters' graph.
    p = make_problem(seed, batch=8, n=64)

    def run(block_elements, **extra):
        inputs = to_torch(p, params_grad=True)
        torch.manual_seed(seed)
        samples = [q.rsample() for q in inputs.posteriors]
        ll = -sum((z**2).sum(-1) for z in samples)
        terms = hfvae_objective(ll, inputs.posteriors, inputs.priors, samples, p.n, ObjectiveWeights(**ARBITRARY),
                                block_elements=block_elements, **extra)
        names = sorted(inputs.leaves)
        return terms, dict(zip(names, torch.autograd.grad(terms.loss, [inputs.leaves[k] for k in names])))

    one_terms, one_grads = run(2**30)
    if checkpoint_calls is not None:
        checkpoint_calls.clear()
    blk_terms, blk_grads = run(1, **CHECKPOINT_EVERY_BLOCK)
    if checkpoint_calls is not None:
        assert len(checkpoint_calls) >= p.batch
    close(blk_terms.objective, one_terms.objective.detach().numpy())
    for name, g in one_grads.items():
        assert g.abs().max() > 0
        close(blk_grads[name], g.numpy(), atol=1e-10)


# =============================================================================================
# 8. Gradient flow from every term to the encoder parameters (rsample)
# =============================================================================================
@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("blocked", [False, True])
def test_every_term_has_gradient_to_encoder(seed, blocked):
    extra = dict(block_elements=1, **CHECKPOINT_EVERY_BLOCK) if blocked else dict(block_elements=2**30)
    g = torch.Generator().manual_seed(seed)
    batch, dtype = 8, torch.float64
    x = torch.randn(batch, 6, generator=g, dtype=dtype)  # data
    enc = {
        "w_loc0": torch.randn(6, 3, generator=g, dtype=dtype),
        "w_scale0": 0.3 * torch.randn(6, 3, generator=g, dtype=dtype),
        "w_logits1": torch.randn(6, 4, generator=g, dtype=dtype),
        "w_loc2": torch.randn(6, 2, generator=g, dtype=dtype),
        "w_scale2": 0.3 * torch.randn(6, 2, generator=g, dtype=dtype),
    }
    for w in enc.values():
        w.requires_grad_(True)
    temperature = torch.tensor(0.5, dtype=dtype)
    posteriors = [
        Normal(x @ enc["w_loc0"], (x @ enc["w_scale0"]).exp()),
        ExpRelaxedCategorical(temperature, logits=x @ enc["w_logits1"]),
        Normal(x @ enc["w_loc2"], (x @ enc["w_scale2"]).exp()),
    ]
    priors = [
        Normal(torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype)),
        ExpRelaxedCategorical(temperature, logits=torch.zeros(4, dtype=dtype)),
        Normal(torch.zeros(2, dtype=dtype), torch.ones(2, dtype=dtype)),
    ]
    torch.manual_seed(seed)
    samples = [q.rsample() for q in posteriors]
    decoder = torch.randn(3 + 4 + 2, 6, generator=g, dtype=dtype)
    code = torch.cat([samples[0], samples[1].exp(), samples[2]], dim=1)
    log_likelihood = -((code @ decoder - x) ** 2).sum(-1)
    terms = hfvae_objective(log_likelihood, posteriors, priors, samples, 100, ObjectiveWeights(**ARBITRARY), **extra)
    params = list(enc.values())
    gaussian_params = [enc["w_loc0"], enc["w_scale0"], enc["w_loc2"], enc["w_scale2"]]
    checks = {
        "reconstruction": (terms.reconstruction, params),
        "mutual_information": (terms.mutual_information, params),
        "tc_between": (terms.tc_between, params),
        "tc_within": (terms.tc_within.sum(), gaussian_params),
        "dimwise_kl": (terms.dimwise_kl.sum(), params),
        "objective": (terms.objective, params),
    }
    for name, (value, wrt) in checks.items():
        grads = torch.autograd.grad(value, wrt, retain_graph=True, allow_unused=True)
        for w, grad in zip(wrt, grads):
            assert grad is not None, f"{name}: no gradient path"
            assert torch.isfinite(grad).all(), name
            assert grad.abs().max() > 1e-8, f"{name}: zero gradient"
    # The Concrete group's within-group TC is identically 0, so it carries no gradient.
    (concrete_tc_grad,) = torch.autograd.grad(terms.tc_within[1], [enc["w_logits1"]], retain_graph=True, allow_unused=True)
    assert concrete_tc_grad is None or concrete_tc_grad.abs().max() == 0


# =============================================================================================
# 9. float32 numerics
# =============================================================================================
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("center", [0.0, 3.0, 20.0])
def test_float32_narrow_posteriors_match_float64_loop(seed, center):
    # Narrow posteriors (scale 1e-3) whose means lie within a few scales of each other, around a
    # center far from 0: an expanded (z - mu)^2 = z^2 - 2 z mu + mu^2 in float32 errs by whole nats.
    rng = np.random.default_rng(seed)
    batch, n = 8, 200
    p = make_problem(seed, batch=batch, n=n, layout=(("gaussian", 4), ("concrete", 3), ("gaussian", 3)))
    for g in p.groups:
        if g.kind == "gaussian":
            loc = (center + 2e-3 * rng.standard_normal((batch, g.size))).astype(np.float32).astype(np.float64)
            scale = np.full((batch, g.size), 1e-3, dtype=np.float32).astype(np.float64)
            z = (loc + scale * rng.standard_normal((batch, g.size))).astype(np.float32).astype(np.float64)
            g.params = dict(loc=loc, scale=scale)
            g.z = z
        else:
            g.params = dict(logits=g.params["logits"].astype(np.float32).astype(np.float64))
            g.z = g.z.astype(np.float32).astype(np.float64)
    for g in p.groups:  # the float64 reference sees exactly the float32 numbers
        for key, value in list(g.prior.items()):
            g.prior[key] = value.astype(np.float32).astype(np.float64)
    p.temperature = float(np.float32(p.temperature))
    ref = reference_marginals(p)
    inputs = to_torch(p, dtype=torch.float32)
    got = log_marginals(inputs.posteriors, inputs.samples, n)
    assert got.log_q_joint.dtype == torch.float32
    # The log densities are ~+6 per dimension here; float32 keeps ~1e-6 relative.
    close(got.log_q_conditional, ref["conditional"], atol=2e-3, rtol=1e-5)
    close(got.log_q_variable, ref["variable"], atol=2e-3, rtol=1e-5)
    close(got.log_q_group, ref["group"], atol=2e-3, rtol=1e-5)
    close(got.log_q_joint, ref["joint"], atol=2e-3, rtol=1e-5)
    terms = hfvae_objective(inputs.log_likelihood, inputs.posteriors, inputs.priors, inputs.samples, n,
                            ObjectiveWeights(**ARBITRARY))
    ref_terms = reference_terms(p, ARBITRARY)
    close(terms.mutual_information, ref_terms["mutual_information"], atol=2e-3, rtol=1e-5)
    close(terms.tc_between, ref_terms["tc_between"], atol=2e-3, rtol=1e-5)
    close(terms.tc_within, ref_terms["tc_within"], atol=2e-3, rtol=1e-5)
    close(terms.dimwise_kl, ref_terms["dimwise_kl"], atol=2e-3, rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", [0.05, 0.01])
def test_float32_low_temperature_concrete_is_finite(seed, temperature):
    p = make_problem(seed, batch=8, n=100, layout=(("gaussian", 3), ("concrete", 10), ("concrete", 2)),
                     temperature=temperature)
    inputs = to_torch(p, dtype=torch.float32, params_grad=True)
    torch.manual_seed(seed)
    samples = [q.rsample() for q in inputs.posteriors]
    ll = -sum((z.float() ** 2).sum(-1) for z in samples[:1])
    terms = hfvae_objective(ll, inputs.posteriors, inputs.priors, samples, p.n, ObjectiveWeights(**ARBITRARY))
    for name, value in _all_outputs(terms).items():
        assert torch.isfinite(value).all(), f"{name} = {value}"
    grads = torch.autograd.grad(terms.loss, list(inputs.leaves.values()))
    for name, grad in zip(inputs.leaves, grads):
        assert torch.isfinite(grad).all(), name
    # and the float32 values agree with the float64 loop on the same (float32) samples
    for g, z in zip(p.groups, samples):
        g.z = z.detach().double().numpy()
        g.params = {k: v.astype(np.float32).astype(np.float64) for k, v in g.params.items()}
        g.prior = {k: v.astype(np.float32).astype(np.float64) for k, v in g.prior.items()}
    p.temperature = float(np.float32(temperature))
    p.loglik = ll.detach().double().numpy()
    ref = reference_terms(p, ARBITRARY)
    scale = max(1.0, abs(ref["objective"]))
    close(terms.objective, ref["objective"], atol=1e-4 * scale, rtol=1e-4)
    close(terms.mutual_information, ref["mutual_information"], atol=1e-3, rtol=1e-4)
    close(terms.dimwise_kl, ref["dimwise_kl"], atol=1e-3, rtol=1e-4)


# =============================================================================================
# 10. Validation
# =============================================================================================
def test_dataset_size_smaller_than_batch_is_rejected():
    p = make_problem(0, batch=6, n=6)
    inputs = to_torch(p)
    with pytest.raises(ValueError, match="dataset_size"):
        hfvae_objective(inputs.log_likelihood, inputs.posteriors, inputs.priors, inputs.samples, 5)
    with pytest.raises(ValueError, match="dataset_size"):
        log_marginals(inputs.posteriors, inputs.samples, 5)
    with pytest.raises(ValueError, match="dataset_size"):
        log_marginals(inputs.posteriors, inputs.samples, 0)


@pytest.mark.parametrize("bad", [10.0, 6.5, "10", None, True])
def test_dataset_size_must_be_an_int(bad):
    p = make_problem(0, batch=6, n=10)
    inputs = to_torch(p)
    with pytest.raises(ValueError, match="dataset_size"):
        hfvae_objective(inputs.log_likelihood, inputs.posteriors, inputs.priors, inputs.samples, bad)


def test_mismatched_group_counts_are_rejected():
    p = make_problem(0, batch=5, n=10)
    inputs = to_torch(p)
    q, pr, z, ll = inputs.posteriors, inputs.priors, inputs.samples, inputs.log_likelihood
    with pytest.raises(ValueError, match="priors"):
        hfvae_objective(ll, q, pr[:2], z, 10)
    with pytest.raises(ValueError, match="samples"):
        hfvae_objective(ll, q, pr, z[:2], 10)
    with pytest.raises(ValueError, match="samples"):
        log_marginals(q[:2], z, 10)
    with pytest.raises(ValueError, match="posteriors"):
        log_marginals([], [], 10)


@pytest.mark.parametrize("name", ["alpha", "beta", "gamma", "delta"])
@pytest.mark.parametrize("bad", [float("nan"), -0.5, -1, float("inf"), "1.0", None, [1.0]])
def test_objective_weights_validation_names_the_parameter(name, bad):
    with pytest.raises(ValueError, match=name):
        ObjectiveWeights(**{name: bad})


def test_objective_weights_accept_zero_and_ints():
    w = ObjectiveWeights(alpha=0, beta=2, gamma=0.5, delta=1)
    assert w.as_dict() == {"alpha": 0.0, "beta": 2.0, "gamma": 0.5, "delta": 1.0}
    assert ObjectiveWeights() == ObjectiveWeights(1.0, 1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    "name,kwargs,expected",
    [
        ("vae", {}, (1, 1, 1, 1)),
        ("beta-vae", dict(beta=3.0), (3, 3, 3, 3)),
        ("beta-vae", dict(beta=0.25), (0.25, 0.25, 0.25, 0.25)),
        ("beta-tcvae", dict(beta=6.0), (1, 6, 6, 1)),
        ("beta-tcvae", dict(beta=0.5), (1, 0.5, 0.5, 1)),
        ("hfvae", dict(alpha=0.5, beta=0.1, gamma=4.0), (0.5, 0.1, 4.0, 1)),
        ("hfvae", dict(alpha=2.0, beta=3.0, gamma=0.0), (2.0, 3.0, 0.0, 1)),
    ],
)
def test_presets_follow_special_cases_table(name, kwargs, expected):
    w = ObjectiveWeights.preset(name, **kwargs)
    assert (w.alpha, w.beta, w.gamma, w.delta) == pytest.approx(expected)


def test_preset_defaults():
    assert ObjectiveWeights.preset("hfvae") == ObjectiveWeights(alpha=1.0, beta=0.1, gamma=4.0, delta=1.0)
    b = ObjectiveWeights.preset("beta-vae")
    assert b.alpha == b.beta == b.gamma == b.delta
    t = ObjectiveWeights.preset("beta-tcvae")
    assert t.alpha == t.delta == 1.0 and t.beta == t.gamma


@pytest.mark.parametrize(
    "name,kwargs,bad",
    [
        ("vae", dict(beta=2.0), "beta"),
        ("vae", dict(alpha=0.5), "alpha"),
        ("beta-vae", dict(alpha=2.0), "alpha"),
        ("beta-vae", dict(gamma=2.0), "gamma"),
        ("beta-tcvae", dict(gamma=2.0), "gamma"),
        ("beta-tcvae", dict(alpha=2.0, delta=3.0), "alpha"),
    ],
)
def test_preset_rejects_weights_it_does_not_take(name, kwargs, bad):
    with pytest.raises(ValueError, match=rf"{name}.*{bad}"):
        ObjectiveWeights.preset(name, **kwargs)


@pytest.mark.parametrize("name", ["infovae", "VAE", "", "hfvae "])
def test_unknown_preset_is_rejected(name):
    with pytest.raises(ValueError, match="unknown"):
        ObjectiveWeights.preset(name)


def test_preset_validates_the_weights_it_sets():
    with pytest.raises(ValueError, match="gamma"):
        ObjectiveWeights.preset("hfvae", gamma=float("nan"))
    with pytest.raises(ValueError, match="beta"):
        ObjectiveWeights.preset("hfvae", beta=-0.1)
    with pytest.raises(ValueError, match="beta"):
        ObjectiveWeights.preset("beta-tcvae", beta=-1.0)


@pytest.mark.parametrize("name", ["beta-vae", "beta-tcvae"])
def test_preset_error_names_the_weight_the_caller_gave(name):
    # The caller gave beta; an error about "alpha" (which they never set) would mislead them.
    with pytest.raises(ValueError, match="beta") as info:
        ObjectiveWeights.preset(name, beta=-1.0)
    assert not str(info.value).startswith("alpha"), str(info.value)


# =============================================================================================
# 11. A large batch in many small blocks equals one block (no memory measurement here)
# =============================================================================================
def test_large_batch_small_blocks_equals_single_block():
    batch, n = 512, 11314
    layout = (("gaussian", 25), ("gaussian", 24), ("concrete", 5))  # 50 variables
    p = make_problem(7, batch=batch, n=n, layout=layout)
    assert p.num_variables == 50
    inputs = to_torch(p)
    with torch.no_grad():
        one = log_marginals(inputs.posteriors, inputs.samples, n, block_elements=2**30)
        many = log_marginals(inputs.posteriors, inputs.samples, n, block_elements=batch * 50 * 60)  # 9 blocks, the last one short
    close(many.log_q_variable, one.log_q_variable.numpy())
    close(many.log_q_group, one.log_q_group.numpy())
    close(many.log_q_joint, one.log_q_joint.numpy())
    # a few rows against the float64 reference (vectorized over b' only)
    weights_off = math.log((n - 1) / (n * (batch - 1)))
    vg = np.array(p.variable_groups())
    for b in (0, 73, 300, 511):
        lq = np.empty((batch, 50))
        v = 0
        for g in p.groups:
            if g.kind == "gaussian":
                for e in range(g.size):
                    lq[:, v] = norm.logpdf(g.z[b, e], loc=g.params["loc"][:, e], scale=g.params["scale"][:, e])
                    v += 1
            else:
                lq[:, v] = [concrete_log_density(g.z[b], g.params["logits"][bp], p.temperature) for bp in range(batch)]
                v += 1
        log_w = np.full(batch, weights_off)
        log_w[b] = -math.log(n)
        joint = log_sum_exp(log_w + lq.sum(1))
        assert float(many.log_q_joint[b]) == pytest.approx(joint, abs=1e-9)
        for d in range(3):
            assert float(many.log_q_group[b, d]) == pytest.approx(log_sum_exp(log_w + lq[:, vg == d].sum(1)), abs=1e-9)
        for v in (0, 24, 25, 49):
            assert float(many.log_q_variable[b, v]) == pytest.approx(log_sum_exp(log_w + lq[:, v]), abs=1e-9)


# =============================================================================================
# Distributions with an event shape: read variable by variable, or refused in one line
# =============================================================================================
def _with_event_shapes(inputs: TorchInputs, wrap_posterior, wrap_prior) -> TorchInputs:
    """The same densities, the Gaussian groups' posteriors and priors wrapped as given."""
    posteriors = [wrap_posterior(q) if isinstance(q, Normal) else q for q in inputs.posteriors]
    priors = [wrap_prior(p, q) if isinstance(q, Normal) else p for p, q in zip(inputs.priors, inputs.posteriors)]
    return TorchInputs(inputs.log_likelihood, posteriors, priors, inputs.samples, inputs.leaves)


def _diagonal_mvn(distribution: Normal):
    from torch.distributions import MultivariateNormal

    return MultivariateNormal(distribution.loc, scale_tril=torch.diag_embed(distribution.scale))


@pytest.mark.parametrize("wrapping", ["Independent posterior and prior", "diagonal MultivariateNormal prior", "both MultivariateNormal"])
@pytest.mark.parametrize("seed", [0, 1])
def test_event_shapes_give_the_terms_of_the_explicit_loops(seed, wrapping):
    from torch.distributions import Independent

    p = make_problem(seed, batch=7, n=40)
    inputs = to_torch(p)
    # priors broadcast against [B, E]; give them the posterior's shape so that they can be wrapped
    expanded = lambda prior, q: Normal(prior.loc.expand_as(q.loc), prior.scale.expand_as(q.scale))  # noqa: E731
    wrap = {
        "Independent posterior and prior": (lambda q: Independent(q, 1), lambda prior, q: Independent(expanded(prior, q), 1)),
        "diagonal MultivariateNormal prior": (lambda q: q, lambda prior, q: _diagonal_mvn(expanded(prior, q))),
        "both MultivariateNormal": (_diagonal_mvn, lambda prior, q: _diagonal_mvn(expanded(prior, q))),
    }[wrapping]
    wrapped = _with_event_shapes(inputs, *wrap)
    terms = hfvae_objective(wrapped.log_likelihood, wrapped.posteriors, wrapped.priors, wrapped.samples, p.n, ObjectiveWeights(**ARBITRARY))
    ref = reference_terms(p, ARBITRARY)
    for name in ("objective", "mutual_information", "tc_between", "tc_within", "dimwise_kl", "elbo"):
        close(getattr(terms, name), ref[name])


def test_distributions_whose_density_joins_the_variables_are_refused():
    from torch.distributions import Dirichlet, MultivariateNormal

    q = Normal(torch.zeros(5, 3), torch.ones(5, 3))
    z = q.sample()
    correlated = MultivariateNormal(torch.zeros(3), covariance_matrix=torch.eye(3) + 0.3)
    with pytest.raises(ValueError, match=r"^the prior of group 0 is a MultivariateNormal with correlated dimensions"):
        hfvae_objective(torch.zeros(5), [q], [correlated], [z], 10)
    with pytest.raises(ValueError, match=r"^the posterior of group 0 is a Dirichlet with event shape \(3,\): the objective needs"):
        hfvae_objective(torch.zeros(5), [Dirichlet(torch.ones(5, 3))], [Dirichlet(torch.ones(3))], [torch.full((5, 3), 1 / 3)], 10)
    with pytest.raises(ValueError, match=r"^the prior of group 0 gives 1 log-densities per item but its posterior has 3 variables"):
        hfvae_objective(torch.zeros(5), [q], [ExpRelaxedCategorical(torch.tensor(0.5), logits=torch.zeros(3))], [z], 10)


# =============================================================================================
# A Gaussian group conditioned on the Concrete sample, q(z | x, c), against explicit loops
# =============================================================================================
def _conditioned_problem(seed: int, batch: int = 6, width: int = 2, classes: int = 3, temperature: float = 0.5):
    rng = np.random.default_rng(seed)
    heads = {
        "loc_base": rng.normal(size=(batch, width)), "loc_weight": 2 * rng.normal(size=(batch, width, classes)),
        "log_scale_base": rng.uniform(-1, 0.3, size=(batch, width)), "log_scale_weight": 0.5 * rng.normal(size=(batch, width, classes)),
    }
    logits = rng.normal(size=(batch, classes))
    # a Concrete sample per item, in log space (logsumexp = 0), and the style drawn at it
    gumbel = -np.log(-np.log(rng.uniform(size=(batch, classes))))
    y = (logits + gumbel) / temperature
    log_c = y - np.logaddexp.reduce(y, axis=1, keepdims=True)
    c = np.exp(log_c)
    loc = heads["loc_base"] + np.einsum("nek,nk->ne", heads["loc_weight"], c)
    scale = np.exp(heads["log_scale_base"] + np.einsum("nek,nk->ne", heads["log_scale_weight"], c))
    style = loc + scale * rng.normal(size=(batch, width))
    return heads, logits, log_c, style, temperature


def _conditioned_reference(heads, logits, log_c, style, temperature, n, weights) -> dict:
    """Every term by loops in float64: the joint at the row's own class sample under every column's encoder."""
    batch, width = style.shape

    def log_style(b, column, at_c):
        c = np.exp(at_c)
        loc = heads["loc_base"][column] + heads["loc_weight"][column] @ c
        scale = np.exp(heads["log_scale_base"][column] + heads["log_scale_weight"][column] @ c)
        return norm.logpdf(style[b], loc, scale)  # [width]

    def log_w(b, column):
        return -math.log(n) if b == column else math.log((n - 1) / (n * (batch - 1)))

    def lse(values):
        values = np.asarray(values)
        return values.max() + math.log(np.exp(values - values.max()).sum())

    cond, joint, group_c, group_s, variables = [], [], [], [], []
    for b in range(batch):
        log_q_c = [concrete_log_density(log_c[b], logits[col], temperature) for col in range(batch)]
        cond.append(log_q_c[b] + log_style(b, b, log_c[b]).sum())
        joint.append(lse([log_w(b, col) + log_q_c[col] + log_style(b, col, log_c[b]).sum() for col in range(batch)]))
        group_c.append(lse([log_w(b, col) + log_q_c[col] for col in range(batch)]))
        own = [log_style(b, col, log_c[col]) for col in range(batch)]  # each column at its own sample
        group_s.append(lse([log_w(b, col) + own[col].sum() for col in range(batch)]))
        variables.append([lse([log_w(b, col) + own[col][e] for col in range(batch)]) for e in range(width)])
    cond, joint, group_c, group_s, variables = map(np.asarray, (cond, joint, group_c, group_s, variables))
    log_prior_s = norm.logpdf(style).sum(1)
    log_prior_c = np.array([concrete_log_density(log_c[b], np.zeros(logits.shape[1]), temperature) for b in range(batch)])
    mi = np.mean(cond - joint)
    tc_between = np.mean(joint - group_c - group_s)
    tc_within = np.array([0.0, np.mean(group_s - variables.sum(1))])  # groups in order: the Concrete one, then the style
    dimwise = np.concatenate([[np.mean(group_c - log_prior_c)], (variables - norm.logpdf(style)).mean(0)])
    elbo = np.mean(-cond + log_prior_s + log_prior_c)
    w = weights
    objective = -w["alpha"] * mi - w["beta"] * tc_between - w["gamma"] * tc_within.sum() - w["delta"] * dimwise.sum()
    return dict(mutual_information=mi, tc_between=tc_between, tc_within=tc_within, dimwise_kl=dimwise, elbo=elbo, objective=objective)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_style_group_conditioned_on_the_class_gives_the_terms_of_the_explicit_loops(seed):
    from topicvae.objective.marginals import ClassConditioning

    heads, logits, log_c, style, temperature = _conditioned_problem(seed)
    n = 40
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    conditioning = ClassConditioning(1, 0, *(t(heads[k]) for k in ("loc_base", "loc_weight", "log_scale_base", "log_scale_weight")))
    concrete = ExpRelaxedCategorical(t(temperature), logits=t(logits))
    posteriors = [concrete, conditioning.own(t(log_c))]
    priors = [ExpRelaxedCategorical(t(temperature), logits=torch.zeros(3, dtype=torch.float64)), Normal(t(0.0), t(1.0))]
    terms = hfvae_objective(
        torch.zeros(len(style), dtype=torch.float64), posteriors, priors, [t(log_c), t(style)], n,
        ObjectiveWeights(**ARBITRARY), conditionings=[conditioning],
    )
    ref = _conditioned_reference(heads, logits, log_c, style, temperature, n, ARBITRARY)
    for name in ("mutual_information", "tc_between", "tc_within", "dimwise_kl", "elbo", "objective"):
        close(getattr(terms, name), ref[name], atol=1e-9)
    # the joint differs from the one of the posteriors taken as independent: the test can fail
    plain = hfvae_objective(torch.zeros(len(style), dtype=torch.float64), posteriors, priors, [t(log_c), t(style)], n,
                            ObjectiveWeights(**ARBITRARY))
    assert abs(float(plain.mutual_information) - ref["mutual_information"]) > 1e-3
    assert float(terms.mutual_information) <= math.log(n) + 1e-12


def test_a_conditioning_that_does_not_fit_its_groups_is_refused():
    from topicvae.objective.marginals import ClassConditioning

    heads, logits, log_c, style, temperature = _conditioned_problem(0)
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    bad = ClassConditioning(1, 0, t(heads["loc_base"][:, :1]), t(heads["loc_weight"]), t(heads["log_scale_base"]), t(heads["log_scale_weight"]))
    posteriors = [ExpRelaxedCategorical(t(temperature), logits=t(logits)), Normal(t(style), t(np.ones_like(style)))]
    priors = [ExpRelaxedCategorical(t(temperature), logits=torch.zeros(3, dtype=torch.float64)), Normal(t(0.0), t(1.0))]
    with pytest.raises(ValueError, match=r"has heads of shape \(6, 1\) and \(6, 2, 3\): give \(6, 2\) and \(6, 2, 3\)"):
        hfvae_objective(torch.zeros(6, dtype=torch.float64), posteriors, priors, [t(log_c), t(style)], 40, conditionings=[bad])
    swapped = ClassConditioning(0, 1, *(t(heads[k]) for k in ("loc_base", "loc_weight", "log_scale_base", "log_scale_weight")))
    with pytest.raises(ValueError, match=r"group 0 is conditioned on group 1: the first must be a Normal group"):
        hfvae_objective(torch.zeros(6, dtype=torch.float64), posteriors, priors, [t(log_c), t(style)], 40, conditionings=[swapped])


def test_the_conditioned_joint_is_the_same_in_blocks_and_its_gradient_reaches_every_head():
    from topicvae.objective.marginals import ClassConditioning

    heads, logits, log_c, style, temperature = _conditioned_problem(3)
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in heads.items()}
    conditioning = ClassConditioning(1, 0, leaves["loc_base"], leaves["loc_weight"], leaves["log_scale_base"], leaves["log_scale_weight"])
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    log_c_t = t(log_c)
    posteriors = [ExpRelaxedCategorical(t(temperature), logits=t(logits)), conditioning.own(log_c_t)]
    priors = [ExpRelaxedCategorical(t(temperature), logits=torch.zeros(3, dtype=torch.float64)), Normal(t(0.0), t(1.0))]
    args = (torch.zeros(6, dtype=torch.float64), posteriors, priors, [log_c_t, t(style)], 40, ObjectiveWeights(**ARBITRARY))
    whole = hfvae_objective(*args, conditionings=[conditioning])
    blocked = hfvae_objective(*args, conditionings=[conditioning], block_elements=7, memory_elements=10)  # 2 rows a block, recomputed
    close(blocked.objective, float(whole.objective.detach()), atol=1e-12)
    gradients = torch.autograd.grad(blocked.objective, list(leaves.values()), retain_graph=True)  # the posteriors are shared
    reference = torch.autograd.grad(whole.objective, list(leaves.values()))
    for got, expected in zip(gradients, reference):
        assert torch.allclose(got, expected, atol=1e-10) and got.abs().sum() > 0
