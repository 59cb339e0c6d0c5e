"""VAAL (Sinha et al. 2019): a VAE and a discriminator trained on labelled vs unlabelled
feature vectors (`alb.select.vaal`); the samples the discriminator finds least
labelled-like are queried. `features`: "image" (classification embedding or the detector's
image features) or "objects" (detection, NORIS supp. Sec. 4: the VAE and discriminator see
object features; an image's score is that of its most dissimilar object; an image without
detections scores 0 and comes last)."""

from __future__ import annotations

import numpy as np

from alb import scoring
from alb.errors import check_choice
from alb.select.vaal import vaal_scores
from alb.strategies.base import Strategy, check_task

FEATURES = ("image", "objects")


class VAAL(Strategy):
    tasks = ("classification", "detection")

    def __init__(self, features: str = "image", steps: int = 500, batch_size: int = 64, latent: int = 32,
                 beta: float = 1.0, adversary: float = 1.0, task: str = "classification"):
        check_choice("features", features, FEATURES)
        self.task = check_task(task, self.tasks)
        if features == "objects" and task != "detection":
            raise ValueError("features=objects needs a detection dataset")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.features, self.steps, self.batch_size, self.latent = features, int(steps), int(batch_size), int(latent)
        self.beta, self.adversary = float(beta), float(adversary)
        field = {"classification": "embedding", "detection": "image_features"}[task]
        self.fields = self.labelled_fields = (field,) if features == "image" else ("box_features",)

    def select(self, unlabelled, labelled, budget, rng):
        seed = int(rng.integers(2**31 - 1))
        kwargs = dict(steps=self.steps, batch_size=self.batch_size, latent=self.latent, beta=self.beta,
                      adversary=self.adversary)
        field = self.fields[0]
        scores = vaal_scores(labelled[field], unlabelled[field], seed, **kwargs)
        if self.features == "objects":  # most dissimilar object per image; 0 without objects
            scores = scoring.aggregate_boxes(scores, unlabelled["offsets"], "max")
        return np.argsort(-scores, kind="stable")[:budget]
