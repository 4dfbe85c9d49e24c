"""Probe: a Concrete class group trained with IMSAT's terms beside HFVAE (docs/images.md, issue 16).

    python recipes/class_vat_probe.py --data ../shared/data/mnist --weight 1000 --epochs 15 [--seed 1]
           [--stop-gradient]

The model is topicvae's ``ImageVAE`` (10 Gaussian + 10-way Concrete, MLP 400-400 style encoder and
decoder, the recipe's HFVAE weights alpha 1, beta 4, gamma 3) whose Concrete logits come from a
class encoder of their own, IMSAT's (Hu et al., 2017, Sec. 4): two hidden layers of 1,200 ReLU units
with batch-norm, He-normal weights scaled by 0.1 and a last layer started near 0 (uniform q(c | x)).
The loss is the HFVAE loss plus ``weight`` times IMSAT's regularized information loss,

    KL(q(c | x) || q(c | x + r_adv)) + 0.1 * (H(C | X) - 4 * H(C)),

r_adv the virtual adversarial direction (one power iteration, xi = 5 in [0, 1] pixel units, as the
reference's 10 in [-1, 1] units) scaled to 0.25 times each training image's distance to its 10th
nearest neighbour (computed once, cached in ``--cache``). ``--stop-gradient`` trains the class
encoder by the IMSAT terms alone (the decoder still reads c). Prints one JSON line per epoch: the
Concrete argmax's unsupervised accuracy on the test images, their categorical I(x; c) (nats of
log 10 = 2.30) and the batch's reconstruction log-likelihood.

The package trains the same model with ``ImageModel(class_encoder="separate", imsat=1000)`` (the
MNIST recipe's default); this probe keeps the class encoder apart to vary the weight and to try
``--stop-gradient``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from topicvae.images.class_levers import (
    VAT_RADIUS_SCALE, categorical_information, imsat_information_loss, neighbour_distances, virtual_adversarial_kl,
)
from topicvae.images.data import load_idx_dataset
from topicvae.images.disentanglement import unsupervised_accuracy
from topicvae.images.models import CLASS_ENCODER_HIDDEN, ImageVAE, imsat_class_encoder
from topicvae.latent.groups import GroupSpec
from topicvae.objective.terms import ObjectiveWeights, hfvae_objective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with the four IDX .gz files")
    parser.add_argument("--name", default="mnist", choices=("mnist", "fashion-mnist"))
    parser.add_argument("--weight", type=float, default=1000.0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--stop-gradient", action="store_true")
    parser.add_argument("--cache", default=".", help="folder for the cached neighbour distances")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    train = load_idx_dataset(args.name, "train", root=args.data)
    test = load_idx_dataset(args.name, "test", root=args.data)
    images = torch.tensor(train.images, dtype=torch.float32).div(255).unsqueeze(1)
    test_images = torch.tensor(test.images, dtype=torch.float32).div(255).unsqueeze(1)
    cache = Path(args.cache) / f"tenth_neighbour_{args.name}.npy"
    if not cache.exists():
        np.save(cache, neighbour_distances(images).numpy())
    radius = VAT_RADIUS_SCALE * torch.tensor(np.load(cache))

    model = ImageVAE(images.shape[1:], GroupSpec.coerce("10,10c"))
    classes = imsat_class_encoder(images[0].numel(), 10, CLASS_ENCODER_HIDDEN)
    optimizer = torch.optim.Adam([*model.parameters(), *classes.parameters()], lr=1e-3)
    weights = ObjectiveWeights.preset("hfvae", beta=4.0, gamma=3.0)
    temperature = torch.tensor(model.temperature)
    started = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train(), classes.train()
        order = torch.randperm(len(images))
        for i in range(len(images) // args.batch_size):
            index = order[i * args.batch_size:(i + 1) * args.batch_size]
            x = images[index]
            posteriors = model.posterior(model.encoder(x))
            logits = classes(x)
            posteriors[model.class_group] = ExpRelaxedCategorical(
                temperature, logits=logits.detach() if args.stop_gradient else logits, validate_args=False)
            samples = [q.rsample() for q in posteriors]
            log_likelihood = -F.binary_cross_entropy_with_logits(
                model.decode_logits(model.code(samples)), x, reduction="none").flatten(1).sum(1)
            terms = hfvae_objective(log_likelihood, posteriors, model.priors(), samples, len(images), weights)
            # IMSAT's terms on the class encoder's q(c | x), as the package's imsat lever
            p = logits.softmax(-1)
            vat = virtual_adversarial_kl(classes, x, p.detach(), radius[index])
            loss = terms.loss + args.weight * (vat + imsat_information_loss(p)["loss"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval(), classes.eval()
        with torch.no_grad():
            probabilities = torch.cat([classes(test_images[j:j + 1000]).softmax(-1) for j in range(0, len(test_images), 1000)])
        print(json.dumps({
            "epoch": epoch,
            "accuracy": round(unsupervised_accuracy(np.asarray(test.labels), probabilities.argmax(1).numpy()), 4),
            "class_information": round(float(categorical_information(probabilities.double())), 3),
            "reconstruction": round(float(log_likelihood.detach().mean()), 1),
            "seconds": round(time.time() - started),
        }), flush=True)


if __name__ == "__main__":
    main()
