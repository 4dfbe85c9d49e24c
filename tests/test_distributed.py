"""Data-parallel training: the objective over a batch split across processes.

The reference is always one process holding the concatenated batch. First in one process
(the split computed part by part with the whole batch's posteriors, no communication), then
with two gloo processes started by torch.multiprocessing: the gathered posteriors, the loss
scaling and DistributedDataParallel's averaging must give that process's objective and
gradients, to 1e-6 in float64 (in practice to rounding).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributions import Normal
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from topicvae.training.distributed import gather_batch, weighted_mean_over_ranks
from topicvae.latent.posteriors import ModelOutput
from topicvae.objective.terms import ObjectiveWeights, hfvae_objective
from topicvae.training.loop import train
from topicvae.training.batches import data_parallel_steps

WEIGHTS = ObjectiveWeights(alpha=0.8, beta=0.3, gamma=3.0, delta=1.4)
DATASET_SIZE = 40
#: the items of each of two ranks: unequal shares, as at the end of an epoch
SPLIT = (slice(0, 6), slice(6, 11))
TEMPERATURE = 0.66
TERMS = ("objective", "reconstruction", "mutual_information", "tc_between", "tc_within", "dimwise_kl", "elbo")


# ---------------------------------------------------------------------------------------------
# A small model whose randomness comes in with the data, so that a split batch sees the same
# noise as the whole one: each row is [x (5 features) | Gaussian noise (4) | Gumbel noise (3)].
# ---------------------------------------------------------------------------------------------
class NoiseInTheData(nn.Module):
    def __init__(self, concrete: bool):
        super().__init__()
        self.concrete = concrete
        self.hidden = nn.Linear(5, 8)
        self.loc = nn.Linear(8, 4)
        self.log_scale = nn.Linear(8, 4)
        self.logits = nn.Linear(8, 3) if concrete else None
        self.decoder = nn.Linear(7 if concrete else 4, 5)

    def forward(self, rows: torch.Tensor) -> ModelOutput:
        x, gaussian_noise, gumbel = rows[:, :5], rows[:, 5:9], rows[:, 9:12]
        h = torch.tanh(self.hidden(x))
        loc, scale = self.loc(h), self.log_scale(h).exp()
        posteriors = [Normal(loc[:, :3], scale[:, :3]), Normal(loc[:, 3:], scale[:, 3:])]
        samples = [loc[:, :3] + scale[:, :3] * gaussian_noise[:, :3], loc[:, 3:] + scale[:, 3:] * gaussian_noise[:, 3:]]
        priors = [Normal(torch.zeros(3, dtype=x.dtype), torch.ones(3, dtype=x.dtype)), Normal(torch.zeros(1, dtype=x.dtype), torch.ones(1, dtype=x.dtype))]
        if self.concrete:
            logits = self.logits(h)
            temperature = torch.tensor(TEMPERATURE, dtype=x.dtype)
            posteriors.append(ExpRelaxedCategorical(temperature, logits=logits))
            samples.append(torch.log_softmax((logits + gumbel) / TEMPERATURE, dim=-1))  # ExpConcrete reparameterization
            priors.append(ExpRelaxedCategorical(temperature, logits=torch.zeros(3, dtype=x.dtype)))
        code = torch.cat([samples[0], samples[1]] + ([samples[2].exp()] if self.concrete else []), dim=1)
        log_likelihood = -((self.decoder(code) - x) ** 2).sum(1)
        return ModelOutput(log_likelihood, posteriors, priors, samples)


def make_rows(seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    items = SPLIT[-1].stop
    x = rng.normal(size=(items, 5))
    noise = rng.normal(size=(items, 4))
    gumbel = -np.log(-np.log(rng.uniform(1e-9, 1.0, size=(items, 3))))
    return torch.from_numpy(np.concatenate([x, noise, gumbel], axis=1))


def make_model(seed: int, concrete: bool) -> NoiseInTheData:
    torch.manual_seed(seed)
    return NoiseInTheData(concrete).double()


class FixedBatches:
    """The rows as one batch per epoch, in the order given (the objective is invariant to it)."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows
        self.device = rows.device

    @property
    def num_items(self) -> int:
        return self.rows.shape[0]

    def __len__(self) -> int:
        return 1

    def epoch(self, generator):
        yield self.rows


def leaf_objective(model: NoiseInTheData, rows: torch.Tensor, *, fused: bool, distributed: bool):
    """The objective with the encoder's outputs as leaves; returns (terms, leaves, scale of the loss)."""
    with torch.no_grad():
        out = model(rows)
    leaves = []
    posteriors = []
    for post in out.posteriors:
        if isinstance(post, Normal):
            loc, scale = post.loc.clone().requires_grad_(), post.scale.clone().requires_grad_()
            leaves += [loc, scale]
            posteriors.append(Normal(loc, scale))
        else:
            logits = post.logits.clone().requires_grad_()
            leaves.append(logits)
            posteriors.append(ExpRelaxedCategorical(post.temperature, logits=logits))
    noise, gumbel = rows[:, 5:9], rows[:, 9:12]
    samples = [posteriors[0].loc + posteriors[0].scale * noise[:, :3], posteriors[1].loc + posteriors[1].scale * noise[:, 3:]]
    if len(posteriors) == 3:
        samples.append(torch.log_softmax((posteriors[2].logits + gumbel) / TEMPERATURE, dim=-1))
    log_likelihood = -(torch.cat(samples, dim=1) ** 2).sum(1) * rows[:, 0]
    whole, scale = {}, 1.0
    if distributed:
        gathered = gather_batch(posteriors)
        whole = {"batch_posteriors": gathered.posteriors, "batch_offset": gathered.offset}
        scale = dist.get_world_size() * rows.shape[0] / gathered.size
    terms = hfvae_objective(log_likelihood, posteriors, out.priors, samples, DATASET_SIZE, WEIGHTS, fused=fused, **whole)
    return terms, leaves, scale


def _term_values(terms) -> dict[str, float]:
    return {name: float(getattr(terms, name).detach().sum()) for name in TERMS}


# ---------------------------------------------------------------------------------------------
# In one process: the parts, each against the whole batch's posteriors, make up the whole.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("concrete", [False, True], ids=["gaussian-fused", "with-concrete"])
@pytest.mark.parametrize("seed", [0, 1])
def test_parts_against_the_whole_batch_make_up_its_objective(seed, concrete):
    rows = make_rows(seed)
    model = make_model(seed, concrete)
    whole_terms, whole_leaves, _ = leaf_objective(model, rows, fused=True, distributed=False)
    whole_terms.loss.backward()

    with torch.no_grad():
        out = model(rows)
    # the whole batch's posteriors as leaves, shared by the parts
    loc_scale = [(p.loc.clone().requires_grad_(), p.scale.clone().requires_grad_()) if isinstance(p, Normal) else (p.logits.clone().requires_grad_(),) for p in out.posteriors]
    batch_posteriors = [Normal(*ps) if len(ps) == 2 else ExpRelaxedCategorical(torch.tensor(TEMPERATURE, dtype=torch.float64), logits=ps[0]) for ps in loc_scale]
    combined = dict.fromkeys(TERMS, 0.0)
    total = torch.zeros((), dtype=torch.float64)
    for part in SPLIT:
        posteriors = [Normal(p.loc[part], p.scale[part]) if isinstance(p, Normal) else ExpRelaxedCategorical(p.temperature, logits=p.logits[part]) for p in batch_posteriors]
        noise, gumbel = rows[part, 5:9], rows[part, 9:12]
        samples = [posteriors[0].loc + posteriors[0].scale * noise[:, :3], posteriors[1].loc + posteriors[1].scale * noise[:, 3:]]
        if concrete:
            samples.append(torch.log_softmax((posteriors[2].logits + gumbel) / TEMPERATURE, dim=-1))
        log_likelihood = -(torch.cat(samples, dim=1) ** 2).sum(1) * rows[part, 0]
        terms = hfvae_objective(
            log_likelihood, posteriors, out.priors, samples, DATASET_SIZE, WEIGHTS,
            batch_posteriors=batch_posteriors, batch_offset=part.start,
        )
        share = (part.stop - part.start) / rows.shape[0]
        for name, value in _term_values(terms).items():
            combined[name] += share * value
        total = total + share * terms.loss
    total.backward()
    for name, value in _term_values(whole_terms).items():
        assert combined[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
    for whole_leaf, part_leaf in zip(whole_leaves, [leaf for ps in loc_scale for leaf in ps]):
        torch.testing.assert_close(part_leaf.grad, whole_leaf.grad, rtol=1e-10, atol=1e-12)


def test_a_misplaced_part_is_refused():
    rows = make_rows(0)
    with torch.no_grad():
        out = make_model(0, False)(rows)
    part = [Normal(p.loc[:6], p.scale[:6]) for p in out.posteriors]
    samples = [p.loc for p in part]
    with pytest.raises(ValueError, match="batch_offset=7 do not place 6 items"):
        hfvae_objective(torch.zeros(6, dtype=torch.float64), part, out.priors, samples, DATASET_SIZE,
                        batch_posteriors=out.posteriors, batch_offset=7)


def test_data_parallel_steps_give_every_rank_two_items_per_step():
    assert data_parallel_steps([5657, 5657], 200) == 57  # ceil(11314 / 200), as in one process
    assert data_parallel_steps([3, 100], 10) == 1  # the small rank bounds the steps
    with pytest.raises(ValueError, match="a rank holds 1 item"):
        data_parallel_steps([1, 100], 10)


# ---------------------------------------------------------------------------------------------
# Two gloo processes
# ---------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        results = {}
        for seed in (0, 1):
            rows = make_rows(seed)[SPLIT[rank]]
            for concrete in (False, True):
                for fused in (True, False):
                    model = make_model(seed, concrete)
                    terms, leaves, scale = leaf_objective(model, rows, fused=fused, distributed=True)
                    (terms.loss * scale).backward()
                    whole = weighted_mean_over_ranks(_term_values(terms), rows.shape[0])
                    results[f"leaves-{seed}-{concrete}-{fused}"] = (whole, [leaf.grad for leaf in leaves])
                # the training loop itself, wrapped in DDP: one SGD step of size 1 moves each
                # parameter by minus the averaged gradient
                model = make_model(seed, concrete)
                before = {name: p.detach().clone() for name, p in model.named_parameters()}
                wrapped = nn.parallel.DistributedDataParallel(model)
                from topicvae.training.distributed import current_process_group

                step = next(train(
                    wrapped, FixedBatches(rows), WEIGHTS, epochs=1, optimizer=torch.optim.SGD(wrapped.parameters(), lr=1.0),
                    generator=torch.Generator(), dataset_size=DATASET_SIZE, process_group=current_process_group(),
                ))
                moved = {name: before[name] - p.detach() for name, p in model.named_parameters()}
                results[f"train-{seed}-{concrete}"] = (step.terms, moved)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn_two(main, directory: Path, attempts: int = 3) -> Path:
    """Run ``main(rank, 2, port, folder)`` in two processes; returns the folder they wrote to.

    The probed port is free when probed, but another process can take it before rank 0 binds
    it (seen in full runs: a rank aborts in gloo's rendezvous). Each attempt gets a fresh port
    and a fresh folder, so nothing from a failed attempt is read; a fault of the code under
    test fails every attempt alike.
    """
    for attempt in range(attempts):
        folder = directory / f"attempt{attempt}"
        folder.mkdir(parents=True)
        try:
            mp.spawn(main, args=(2, _free_port(), str(folder)), nprocs=2, join=True)
            return folder
        except mp.ProcessExitedException:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out_dir = _spawn_two(_rank_main, tmp_path_factory.mktemp("ranks"))
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "generic"])
@pytest.mark.parametrize("concrete", [False, True], ids=["gaussian", "with-concrete"])
@pytest.mark.parametrize("seed", [0, 1])
def test_two_gloo_processes_give_the_objective_and_gradients_of_one(two_process_results, seed, concrete, fused):
    rows = make_rows(seed)
    terms, leaves, _ = leaf_objective(make_model(seed, concrete), rows, fused=fused, distributed=False)
    terms.loss.backward()
    single = _term_values(terms)
    for rank, results in enumerate(two_process_results):
        whole, grads = results[f"leaves-{seed}-{concrete}-{fused}"]
        for name in TERMS:
            assert whole[name] == pytest.approx(single[name], rel=1e-6, abs=1e-6), (rank, name)
        for grad, leaf in zip(grads, leaves):
            # the loss each rank differentiates is R B_r / B times its mean, so the gradient
            # of its own items' leaves is R times the single process's (DDP divides by R)
            torch.testing.assert_close(grad / 2, leaf.grad[SPLIT[rank]], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("concrete", [False, True], ids=["gaussian", "with-concrete"])
@pytest.mark.parametrize("seed", [0, 1])
def test_two_gloo_processes_train_like_one(two_process_results, seed, concrete):
    model = make_model(seed, concrete)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    step = next(train(
        model, FixedBatches(make_rows(seed)), WEIGHTS, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
        generator=torch.Generator(), dataset_size=DATASET_SIZE,
    ))
    moved = {name: before[name] - p.detach() for name, p in model.named_parameters()}
    for rank, results in enumerate(two_process_results):
        terms, rank_moved = results[f"train-{seed}-{concrete}"]
        for name, value in step.terms.items():
            assert terms[name] == pytest.approx(value, rel=1e-6, abs=1e-6), (rank, name)
        for name, delta in moved.items():
            torch.testing.assert_close(rank_moved[name], delta, rtol=1e-6, atol=1e-6, msg=f"rank {rank}: {name}")


# ---------------------------------------------------------------------------------------------
# The estimator under two gloo processes: streamed shares, checkpoints and resuming
# ---------------------------------------------------------------------------------------------
def _estimator_rank_main(rank: int, world_size: int, port: int, out_dir: str) -> None:
    from conftest import counts_to_documents, planted_corpus

    from topicvae import TopicModel
    from topicvae.training.distributed import current_process_group
    from topicvae.text.shards import build_bag_of_words
    from topicvae.text.vectorizer import TextVectorizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    out = Path(out_dir)
    try:
        counts, vocabulary, _ = planted_corpus(n_docs=301, seed=4)
        documents = counts_to_documents(counts, vocabulary)
        group = current_process_group()
        bag = build_bag_of_words(
            documents, out / f"bow-{rank}", TextVectorizer(min_df=1, max_df=1.0, max_features=None),
            documents_per_shard=40, process_group=group,
        )
        options = dict(groups="2x3", epochs=3, batch_size=60, seed=0)
        uninterrupted = TopicModel(**options).fit(bag)
        # stop after epoch 2 (its checkpoint written by rank 0), then resume on both ranks
        steps = TopicModel(**options).fit_iter(bag, checkpoint_dir=out / "checkpoint")
        for progress in steps:
            if progress.epoch_done and progress.epoch == 2:
                break
        steps.close()
        resumed = TopicModel(**options).fit(bag, checkpoint_dir=out / "checkpoint", resume=True)
        in_memory = TopicModel(**options).fit(documents)  # each rank trains on its rows of the whole list
        torch.save(
            {
                "bag": (bag.vocabulary, bag.n_documents, bag.rank_documents),
                "state": uninterrupted.model_.state_dict(),
                "resumed_state": resumed.model_.state_dict(),
                "resumed_history": resumed.history_,
                "history": uninterrupted.history_,
                "correlation": torch.from_numpy(uninterrupted.topic_correlation_),
                "in_memory_state": in_memory.model_.state_dict(),
                "in_memory_documents": in_memory.n_documents_,
            },
            out / f"estimator-rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_two_processes_fit_shares_of_a_streamed_corpus_and_resume_exactly(tmp_path):
    from conftest import counts_to_documents, planted_corpus

    from topicvae.text.vectorizer import TextVectorizer

    out_dir = _spawn_two(_estimator_rank_main, tmp_path)
    ranks = [torch.load(out_dir / f"estimator-rank{rank}.pt", weights_only=True) for rank in range(2)]
    counts, vocabulary, _ = planted_corpus(n_docs=301, seed=4)
    expected = TextVectorizer(min_df=1, max_df=1.0, max_features=None).fit(counts_to_documents(counts, vocabulary))
    for rank in ranks:
        # one vocabulary for both ranks, chosen from both ranks' tallies as one process would
        assert rank["bag"] == (expected.vocabulary_, 301, [151, 150])
        assert rank["resumed_history"] == rank["history"]  # restored epochs 1-2, then epoch 3 trained again
        for name, tensor in rank["state"].items():
            assert torch.equal(rank["resumed_state"][name], tensor), name
        assert rank["in_memory_documents"] == 301
    # DDP keeps the ranks' weights equal; the reported terms and correlations are the whole corpus's
    for key in ("state", "in_memory_state"):
        for name, tensor in ranks[0][key].items():
            if "running" not in name and "num_batches" not in name:  # batch-norm statistics are per rank
                assert torch.equal(ranks[1][key][name], tensor), (key, name)
    assert ranks[0]["history"] == ranks[1]["history"]
    torch.testing.assert_close(ranks[0]["correlation"], ranks[1]["correlation"], rtol=1e-12, atol=1e-12)
