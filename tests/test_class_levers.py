"""The levers that move the class into the Concrete group (topicvae.images.class_levers): the categorical
information against an explicit float64 loop, the capacity schedule, the augmentation, and
what each lever does in training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from topicvae.images.class_levers import ClassLevers, capacity_target, categorical_information, random_affine
from topicvae.images.estimator import ImageModel

from test_images import planted_images


def _information_loop(p: np.ndarray) -> float:
    """I(x; c) = sum_b sum_k (1/B) p_bk log(p_bk / pbar_k), written out in float64."""
    batch, categories = p.shape
    marginal = [sum(p[b, k] for b in range(batch)) / batch for k in range(categories)]
    total = 0.0
    for b in range(batch):
        for k in range(categories):
            if p[b, k] > 0:
                total += p[b, k] / batch * math.log(p[b, k] / marginal[k])
    return total


def test_categorical_information_matches_the_explicit_loop_and_its_bounds():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(5, 0.3), size=40)
    assert float(categorical_information(torch.tensor(p))) == pytest.approx(_information_loop(p), abs=1e-12)
    balanced = torch.eye(4).repeat(3, 1).double()  # confident and balanced: log K
    assert float(categorical_information(balanced)) == pytest.approx(math.log(4), abs=1e-12)
    assert float(categorical_information(torch.full((6, 4), 0.25, dtype=torch.float64))) == pytest.approx(0.0, abs=1e-12)
    one_category = torch.zeros(6, 4, dtype=torch.float64)
    one_category[:, 2] = 1  # confident but all alike: no information
    assert float(categorical_information(one_category)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"probabilities has shape \(4,\): pass \[items, categories\]"):
        categorical_information(torch.ones(4))


def test_the_capacity_rises_over_half_of_training_then_stays():
    assert [capacity_target(2.0, t) for t in (0.0, 0.25, 0.5, 0.9)] == [0.0, 1.0, 2.0, 2.0]
    assert capacity_target(2.0, 0.3, ramp=0.0) == 2.0


def test_random_affine_maps_keep_shape_and_range_and_follow_the_seed():
    images = torch.rand(5, 1, 28, 28)
    torch.manual_seed(1)
    moved = random_affine(images)
    torch.manual_seed(1)
    again = random_affine(images)
    assert moved.shape == images.shape and torch.equal(moved, again)
    assert float(moved.min()) >= 0.0 and float(moved.max()) <= 1.0 and not torch.allclose(moved, images)


def test_lever_weights_are_named_when_invalid():
    with pytest.raises(ValueError, match=r"class_capacity=-1 is invalid: give a weight >= 0 \(0 leaves the lever off\)"):
        ClassLevers(class_capacity=-1)
    with pytest.raises(ValueError, match=r"augmentation=nan is invalid"):
        ClassLevers(augmentation=float("nan"))
    images, _ = planted_images(40, 0)
    with pytest.raises(ValueError, match=r"class_capacity and augmentation act on a Concrete group, and groups .* have none"):
        ImageModel("3", class_capacity=1.0, epochs=1).fit(images)
    with pytest.raises(ValueError, match=r"style_capacity acts on Gaussian groups"):
        ImageModel("4c", style_capacity=1.0, epochs=1).fit(images)


def test_the_penalty_is_the_weighted_distance_to_the_capacity():
    images, _ = planted_images(64, 0)
    model = ImageModel("2,4c", epochs=1, batch_size=32, hidden_sizes=(16,), device="cpu").fit(images)
    network = model.model_.train()
    batch = torch.as_tensor(images[:32], dtype=torch.float32).unsqueeze(1)
    torch.manual_seed(0)
    out = network(batch)
    terms = ClassLevers(class_capacity=3.0).terms(network, batch, out, progress=0.25)
    information = categorical_information(out.posteriors[1].logits.softmax(-1))
    assert float(terms["class_information"]) == pytest.approx(float(information))
    assert float(terms["penalty"]) == pytest.approx(3.0 * abs(float(information) - math.log(4) / 2), rel=1e-6)


def test_each_lever_trains_and_is_reported_and_the_capacity_fills_the_categories():
    images, labels = planted_images(400, 0)
    options = dict(epochs=6, batch_size=50, hidden_sizes=(64,), lr=3e-3, seed=0, device="cpu")
    plain = ImageModel("2,4c", **options).fit(images)
    levered = ImageModel("2,4c", class_capacity=10.0, style_capacity=1.0, augmentation=1.0, **options).fit(images)
    assert {"penalty", "class_information", "style_kl", "augmentation_kl"} <= set(levered.history_[-1])
    assert "penalty" not in plain.history_[-1]

    def information(model):
        return float(categorical_information(torch.as_tensor(model.transform(images)[:, 2:], dtype=torch.float64)))

    # the capacity pulls the categorical I(x; c) up to its target log 4 = 1.386
    assert information(levered) > 1.1 and information(levered) > information(plain) + 0.2, (information(levered), information(plain))
    conditioned = ImageModel("2,4c", class_conditioned=True, class_capacity=10.0, augmentation=1.0, **options).fit(images)
    assert np.isfinite(conditioned.history_[-1]["augmentation_kl"])
