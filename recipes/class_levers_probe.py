"""Measure the levers that move MNIST's class into the Concrete group (docs/images.md, issue 16).

    python recipes/class_levers_probe.py --data ../shared/data/mnist --class-capacity 100 \\
        --style-capacity 30 --augmentation 20 [--architecture conv] [--seed 1] [--jointvae-kl]

Trains an ``ImageVAE`` (10 Gaussian + 10-way Concrete) with the HFVAE objective (the recipe's
beta 4, gamma 3) plus the terms of :class:`topicvae.images.class_levers.ClassLevers`, and prints after
every epoch the Concrete group's unsupervised accuracy on the test images and their categorical
I(x; c), one JSON line per epoch. ``--jointvae-kl`` replaces the categorical I(x; c) in the class
capacity by JointVAE's own discrete term, KL(q(c | x) || uniform) averaged over the batch.
``topicvae recipe mnist --class-capacity ... --style-capacity ... --augmentation ...`` trains the
same model through ``ImageModel`` and scores it fully; this script exists for the JointVAE
variant and the per-epoch curve.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from topicvae.images.class_levers import ClassLevers, capacity_target, categorical_information
from topicvae.images.disentanglement import unsupervised_accuracy
from topicvae.latent.groups import GroupSpec
from topicvae.images.data import load_idx_dataset
from topicvae.images.models import ImageVAE
from topicvae.objective.terms import ObjectiveWeights, hfvae_objective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with the four MNIST IDX .gz files")
    parser.add_argument("--architecture", default="mlp", choices=("mlp", "conv"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--class-capacity", type=float, default=0.0)
    parser.add_argument("--style-capacity", type=float, default=0.0)
    parser.add_argument("--augmentation", type=float, default=0.0)
    parser.add_argument("--jointvae-kl", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    train = load_idx_dataset("mnist", "train", root=args.data)
    test = load_idx_dataset("mnist", "test", root=args.data)
    images = torch.tensor(train.images, dtype=torch.float32).div(255).unsqueeze(1)
    test_images = torch.tensor(test.images, dtype=torch.float32).div(255).unsqueeze(1)
    model = ImageVAE(images.shape[1:], GroupSpec.coerce("10,10c"), architecture=args.architecture)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    weights = ObjectiveWeights.preset("hfvae", beta=4.0, gamma=3.0)
    # the JointVAE variant keeps the other levers and replaces the class capacity's quantity
    levers = ClassLevers(0.0 if args.jointvae_kl else args.class_capacity, args.style_capacity, args.augmentation)
    steps_per_epoch = len(images) // args.batch_size
    total, step, started = steps_per_epoch * args.epochs, 0, time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(images))
        for i in range(steps_per_epoch):
            batch = images[order[i * args.batch_size:(i + 1) * args.batch_size]]
            out = model(batch)
            terms = hfvae_objective(out.log_likelihood, out.posteriors, out.priors, out.samples, len(images), weights)
            loss = terms.loss + levers.terms(model, batch, out, step / total)["penalty"]
            if args.jointvae_kl:
                p = out.posteriors[1].logits.softmax(-1)
                kl_uniform = (p * (p.clamp_min(1e-12).log() + math.log(p.shape[1]))).sum(-1).mean()
                loss = loss + args.class_capacity * (kl_uniform - capacity_target(math.log(p.shape[1]), step / total)).abs()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
        model.eval()
        with torch.no_grad():
            probabilities = torch.cat([model.class_logits(test_images[j:j + 1000]).softmax(-1) for j in range(0, len(test_images), 1000)])
        print(json.dumps({
            "epoch": epoch,
            "accuracy": round(unsupervised_accuracy(np.asarray(test.labels), probabilities.argmax(1).numpy()), 4),
            "class_information": round(float(categorical_information(probabilities.double())), 4),
            "seconds": round(time.time() - started),
        }), flush=True)


if __name__ == "__main__":
    main()
