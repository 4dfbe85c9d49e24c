"""The levers that move the class into the Concrete group (topicvae.images.class_levers): the categorical
information against an explicit float64 loop, the capacity schedule, the augmentation, and
what each lever does in training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from topicvae.images.class_levers import (
    ClassLevers, capacity_target, categorical_information, imsat_information_loss, neighbour_distances, random_affine,
    virtual_adversarial_kl,
)
from topicvae.images.estimator import ImageModel, final_training_objective, restart_seeds

from test_images import best_matching_accuracy, planted_images


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
    with pytest.raises(ValueError, match=r"class_capacity, augmentation and imsat act on a Concrete group, and groups .* have none"):
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


# --- IMSAT's terms, the separate class encoder and restarts -------------------------------------


def oriented_bars(n: int, seed: int, classes: int = 4, size: int = 10):
    """Grey images [n, size, size] of one blurred bar: the class is its orientation (k pi / K, k < K),
    the style is continuous (its width, offset from the centre and brightness), so no style value
    can stand for a class the way a discrete style could."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    angle = labels * np.pi / classes
    width, offset, brightness = rng.uniform(0.5, 1.0, n), rng.uniform(-0.7, 0.7, n), rng.uniform(0.8, 1.0, n)
    grid = np.arange(size) - (size - 1) / 2
    y, x = np.meshgrid(grid, grid, indexing="ij")
    distance = x[None] * np.sin(angle)[:, None, None] - y[None] * np.cos(angle)[:, None, None] - offset[:, None, None]
    return (brightness[:, None, None] * np.exp(-0.5 * (distance / width[:, None, None]) ** 2)).astype(np.float32), labels


def _neighbour_loop(points: np.ndarray, reference: np.ndarray, rank: int) -> list[float]:
    """The rank-th smallest distance from each point to the reference points other than itself, in float64."""
    out = []
    for i, x in enumerate(points):
        distances = sorted(math.dist(x, points[j]) for j in reference if j != i)
        out.append(distances[rank - 1])
    return out


def test_neighbour_distances_match_an_explicit_loop_exactly_and_on_a_reference_subset():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 1, 3, 3)).astype(np.uint8)
    points = images.reshape(40, -1).astype(np.float64) / 255
    exact = neighbour_distances(torch.from_numpy(images), scale=1 / 255, neighbour=3, chunk=7)
    np.testing.assert_allclose(exact.numpy(), _neighbour_loop(points, range(40), 3), rtol=1e-5)
    # beyond max_reference: a random subset of 20 stands for all 40, at rank round(4 * 20 / 40) = 2
    subset = neighbour_distances(
        torch.from_numpy(images), scale=1 / 255, neighbour=4, max_reference=20, generator=torch.Generator().manual_seed(3)
    )
    reference = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:20].tolist()
    np.testing.assert_allclose(subset.numpy(), _neighbour_loop(points, reference, 2), rtol=1e-5)
    with pytest.raises(ValueError, match=r"neighbour=10 needs more than 10 images; X holds 5"):
        neighbour_distances(torch.zeros(5, 4))


def test_imsat_information_terms_match_the_explicit_loop():
    p = np.random.default_rng(1).dirichlet(np.full(4, 0.5), size=12)
    marginal = [sum(p[b, k] for b in range(12)) / 12 for k in range(4)]
    h_marginal = -sum(m * math.log(m) for m in marginal)
    h_conditional = -sum(p[b, k] * math.log(p[b, k]) for b in range(12) for k in range(4)) / 12
    terms = imsat_information_loss(torch.tensor(p))
    assert float(terms["class_marginal_entropy"]) == pytest.approx(h_marginal, abs=1e-12)
    assert float(terms["class_conditional_entropy"]) == pytest.approx(h_conditional, abs=1e-12)
    assert float(terms["loss"]) == pytest.approx(0.1 * (h_conditional - 4 * h_marginal), abs=1e-12)
    # I(x; c) = H(C) - H(C | X): the same quantity the class capacity reads
    assert h_marginal - h_conditional == pytest.approx(float(categorical_information(torch.tensor(p))), abs=1e-12)


def test_the_virtual_adversarial_direction_beats_random_ones_and_a_zero_radius_costs_nothing():
    torch.manual_seed(0)
    weight = torch.randn(9, 3, dtype=torch.float64)

    def class_logits(images):
        return images.flatten(1) @ weight

    images = torch.rand(6, 1, 3, 3, dtype=torch.float64)
    target = class_logits(images).softmax(-1)
    radius = torch.full((6,), 0.3, dtype=torch.float64)
    assert float(virtual_adversarial_kl(class_logits, images, target, torch.zeros(6, dtype=torch.float64))) == pytest.approx(0.0, abs=1e-12)
    adversarial = float(virtual_adversarial_kl(class_logits, images, target, radius, xi=1e-3))
    for _ in range(20):
        direction = torch.randn_like(images)
        direction = 0.3 * direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        log_q = class_logits(images + direction).log_softmax(-1)
        random_kl = float((target * (target.log() - log_q)).sum(-1).mean())
        assert adversarial > random_kl


def test_the_imsat_penalty_is_its_weighted_terms_and_needs_the_radii():
    images, _ = oriented_bars(64, 0)
    model = ImageModel("2,4c", epochs=1, batch_size=32, hidden_sizes=(16,), class_encoder="separate", device="cpu").fit(images)
    network = model.model_.train()
    batch = torch.as_tensor(images[:32]).unsqueeze(1)
    out = network(batch)
    radius = torch.full((32,), 0.5)
    torch.manual_seed(5)
    terms = ClassLevers(imsat=7.0).terms(network, batch, out, progress=0.0, radius=radius)
    probabilities = out.posteriors[1].logits.softmax(-1)
    torch.manual_seed(5)
    vat = virtual_adversarial_kl(network.class_logits, batch, probabilities.detach(), radius)
    expected = 7.0 * (float(vat) + float(imsat_information_loss(probabilities)["loss"]))
    assert float(terms["penalty"]) == pytest.approx(expected, rel=1e-5)
    assert {"vat_kl", "class_conditional_entropy", "class_marginal_entropy"} <= set(terms)
    with pytest.raises(ValueError, match=r"the imsat lever needs each image's VAT radius: pass radius"):
        ClassLevers(imsat=1.0).terms(network, batch, out, progress=0.0)


def test_class_encoder_and_restart_options_are_named_when_invalid():
    images, _ = oriented_bars(40, 0)
    with pytest.raises(ValueError, match=r"class_encoder='cnn' is unknown: choose one of shared, separate"):
        ImageModel("2,4c", class_encoder="cnn", epochs=1).fit(images)
    with pytest.raises(ValueError, match=r"class_encoder='separate' needs a Concrete group and class_conditioned=False"):
        ImageModel("2,4c", class_encoder="separate", class_conditioned=True, epochs=1).fit(images)
    with pytest.raises(ValueError, match=r"class_encoder='separate' needs a Concrete group"):
        ImageModel("3", class_encoder="separate", epochs=1).fit(images)
    with pytest.raises(ValueError, match=r"class_capacity, augmentation and imsat act on a Concrete group"):
        ImageModel("3", imsat=1.0, epochs=1).fit(images)
    with pytest.raises(ValueError, match=r"imsat=-2 is invalid: give a weight >= 0"):
        ClassLevers(imsat=-2)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=r"n_init=.* is invalid: give a whole number of restarts >= 1"):
            ImageModel("2,4c", n_init=bad, epochs=1).fit(images)


def test_batches_with_indices_keep_the_order_of_plain_batches():
    from topicvae.training.batches import ImageBatches

    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    batches = ImageBatches(images, 4, scale=1.0)
    plain = list(batches.epoch(torch.Generator().manual_seed(2)))
    indexed = list(batches.indexed_epoch(torch.Generator().manual_seed(2)))
    assert all(torch.equal(a, b) for a, (_, b) in zip(plain, indexed)) and len(plain) == len(indexed) == 3
    for index, batch in indexed:  # the indices name the images the batch holds
        assert torch.equal(batch.flatten(), index.float())


def test_restarts_keep_the_lowest_training_objective_and_the_first_is_the_single_run(tmp_path):
    assert restart_seeds(0, 3)[0] == 0 and len(set(restart_seeds(0, 3))) == 3
    assert not set(restart_seeds(0, 3)[1:]) & {1, 2}  # not the first runs of seeds 1 and 2
    images, _ = oriented_bars(120, 0)
    options = dict(epochs=2, batch_size=40, hidden_sizes=(16,), imsat=10.0, class_encoder="separate", seed=4, device="cpu")
    single = ImageModel("2,4c", **options).fit(images)
    restarted = ImageModel("2,4c", n_init=3, **options).fit(images)
    objectives = [r["objective"] for r in restarted.restarts_]
    assert [r["seed"] for r in restarted.restarts_] == restart_seeds(4, 3)
    assert objectives[0] == pytest.approx(final_training_objective(single.history_[-1]))
    assert final_training_objective(restarted.history_[-1]) == pytest.approx(min(objectives))
    if int(np.argmin(objectives)) == 0:
        np.testing.assert_array_equal(restarted.transform(images), single.transform(images))
    restarted.save(tmp_path / "model")
    loaded = ImageModel.load(tmp_path / "model")
    assert loaded.restarts_ == restarted.restarts_ and loaded.class_encoder == "separate"
    np.testing.assert_array_equal(loaded.transform(images), restarted.transform(images))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_imsat_with_restarts_gives_the_concrete_group_the_planted_class_for_every_seed(seed):
    images, labels = oriented_bars(800, seed)
    options = dict(epochs=10, batch_size=100, hidden_sizes=(64,), lr=3e-3, seed=seed, device="cpu")
    model = ImageModel("2,4c", imsat=1000.0, class_encoder="separate", n_init=5, **options).fit(images)
    # A start that merges two of the four orientations into one category scores at most 0.75;
    # one start alone does so in 2 of 6 seeds at one thread (0.65, 0.76), and such starts end with a higher
    # training objective, so the start kept gives every orientation its own category. Which
    # start wins depends on the arithmetic (1 or 2 threads): the kept one scored 0.87-1.00.
    assert best_matching_accuracy(labels, model.classes(images)) >= 0.8
    probabilities = torch.as_tensor(model.transform(images)[:, 2:], dtype=torch.float64)
    assert float(categorical_information(probabilities)) > 0.9 * math.log(4)
