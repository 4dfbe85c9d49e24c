"""Devices and precision: mixed precision for the network, never for the pairwise log-densities."""

from __future__ import annotations

import pytest
import torch

import topicvae.training.loop as training
from conftest import planted_corpus
from topicvae import TopicModel


def test_bfloat16_runs_the_network_in_mixed_precision_and_the_objective_in_float32(monkeypatch):
    seen = {"network": set(), "objective": set()}
    cast = training._in_float32
    objective = training.hfvae_objective

    def recording_cast(out):
        seen["network"].add(out.posteriors[0].loc.dtype)
        return cast(out)

    def recording_objective(log_likelihood, posteriors, priors, samples, *args, **kwargs):
        seen["objective"] |= {log_likelihood.dtype, *(q.loc.dtype for q in posteriors), *(z.dtype for z in samples)}
        return objective(log_likelihood, posteriors, priors, samples, *args, **kwargs)

    monkeypatch.setattr(training, "_in_float32", recording_cast)
    monkeypatch.setattr(training, "hfvae_objective", recording_objective)
    counts, vocabulary, _ = planted_corpus(n_docs=200, seed=0)
    model = TopicModel("prodlda", "2x3", epochs=2, batch_size=50, precision="bfloat16", device="cpu")
    model.fit(counts, vocabulary=vocabulary)
    assert seen == {"network": {torch.bfloat16}, "objective": {torch.float32}}
    assert all(torch.isfinite(p).all() for p in model.model_.parameters())
    assert model.model_.topic_words.weight.dtype == torch.float32  # the weights themselves stay float32


def test_auto_precision_is_float32_on_the_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(training, "_in_float32", lambda out: calls.append(out) or out)
    counts, vocabulary, _ = planted_corpus(n_docs=100, seed=0)
    TopicModel("prodlda", "2x3", epochs=1, batch_size=50, device="cpu").fit(counts, vocabulary=vocabulary)
    assert calls == []


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(precision="float16"), r"precision='float16' is invalid: use 'auto', 'float32', 'bfloat16'"),
        (dict(device="cuda:x"), r"device='cuda:x' is invalid: use 'auto', 'cpu', 'cuda' or 'cuda:K'"),
    ],
)
def test_bad_devices_and_precisions_are_named(params, match):
    counts, vocabulary, _ = planted_corpus(n_docs=60, seed=0)
    with pytest.raises(ValueError, match=match):
        TopicModel(groups="2x3", epochs=1, **params).fit(counts, vocabulary=vocabulary)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine: the CUDA path is not exercised here")
def test_auto_device_trains_on_the_gpu_with_bfloat16_when_there_is_one():
    counts, vocabulary, _ = planted_corpus(n_docs=200, seed=0)
    model = TopicModel("prodlda", "2x3", epochs=2, batch_size=50).fit(counts, vocabulary=vocabulary)
    assert next(model.model_.parameters()).device.type == "cuda"
