"""Core-Set (Sener & Savarese 2018): k-center greedy from the labelled set. The greedy
2-approximation, not the MIP.

Classification: penultimate embeddings. Detection: `features=image` uses the detector's
image features (the global average pool of the chosen map); `features=objects` uses
NORIS's object distance (NORIS Tab. 2, "Core-Set with object features": the largest
squared distance between the two images' object features, Eq. 9; `image_term=true` makes
it Eq. 10)."""

from __future__ import annotations

import numpy as np

from alb.errors import check_choice
from alb.records import concat
from alb.select import ObjectDistances, kcenter_from_labelled, kcenter_on_distances
from alb.strategies.base import Strategy, check_task

FEATURES = ("image", "objects")


class CoreSet(Strategy):
    tasks = ("classification", "detection")

    def __init__(self, task: str = "classification", features: str = "image", image_term: bool = False,
                 precision: str = "fp32"):
        self.task = check_task(task, self.tasks)
        check_choice("features", features, FEATURES)
        self.features, self.image_term, self.precision = features, bool(image_term), precision
        if task == "classification":
            self.fields = self.labelled_fields = ("embedding",)
        elif features == "image":
            self.fields = self.labelled_fields = ("image_features",)
        else:
            self.fields = self.labelled_fields = ("box_features", "image_features")

    def select(self, unlabelled, labelled, budget, rng):
        if self.task == "detection" and self.features == "objects":
            both = concat(labelled, unlabelled, self.fields)
            distances = ObjectDistances(both["box_features"], both["offsets"], both["image_features"],
                                        image_term=self.image_term)
            mask = np.arange(labelled.n + unlabelled.n) < labelled.n
            return kcenter_on_distances(distances, len(mask), mask, budget) - labelled.n
        feature = "embedding" if self.task == "classification" else "image_features"
        return kcenter_from_labelled(labelled[feature], unlabelled[feature], budget, self.precision)
