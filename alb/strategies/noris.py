"""NORIS (Hekimoglu et al.): least-confidence scores, reduced greedily by the similarity to
what is already selected (Sum: Alg. 1; Max: Eq. 8 by default, supp. Alg. 2 as max_alg2).

Classification: Euclidean distances of penultimate embeddings. Detection (Sec. 3.3): the
image score is the least confidence of its boxes reduced by `score_aggregate` (max by
default, 0 without detections), and the distance is Eq. 10, d_o(u, v) * ||f_u - f_v||^2 over
the object features of the chosen map (`model.feature_level`, f4 for CenterNet), with the
ablations of supplement Tab. 4 (`aggregate`: the object-pair reduction of d_o only, as the
table varies it; `metric`, `image_term`). `update`: which score of the pick Alg. 1 subtracts
(`alb.select.noris.noris_select`). `min_score > 0` keeps
only boxes scoring at least that as objects (the paper does not give a threshold; by
default every box the detector returns after its own score threshold counts)."""

from __future__ import annotations

from alb import scoring
from alb.records import keep_boxes
from alb.select import ObjectDistances, noris_greedy
from alb.select.noris import check_noris_params
from alb.select.objects import check_object_params
from alb.strategies.base import Strategy, check_sigmoid, check_task, image_uncertainty


class NORIS(Strategy):
    tasks = ("classification", "detection")

    def __init__(self, variant: str = "sum", similarity: str = "gaussian", alpha: float = 0.5,
                 measure: str = "least_confidence", aggregate: str = "max", metric: str = "euclidean",
                 image_term: bool = True, min_score: float = 0.0, task: str = "classification",
                 sigmoid: str = "class_sum", update: str = "current", score_aggregate: str = "max"):
        check_noris_params(variant, similarity, alpha, update)
        check_object_params(aggregate, metric)
        check_object_params(score_aggregate, metric)
        self.variant, self.similarity, self.alpha, self.measure = variant, similarity, float(alpha), measure
        self.update, self.score_aggregate = update, score_aggregate
        self.aggregate, self.metric, self.image_term = aggregate, metric, bool(image_term)
        self.sigmoid = check_sigmoid(sigmoid)
        self.min_score = float(min_score)
        self.task = check_task(task, self.tasks)
        self.fields = (("probs", "embedding") if task == "classification"
                       else ("box_probs", "box_features", "image_features", *(("scores",) if min_score > 0 else ())))

    def select(self, unlabelled, labelled, budget, rng):
        if self.task == "classification":
            scores = scoring.uncertainty(unlabelled["probs"], self.measure)
            return noris_greedy(scores, unlabelled["embedding"], budget, self.variant, self.similarity, self.alpha,
                                update=self.update)
        if self.min_score > 0:  # only confident detections count as objects (score and distance)
            unlabelled = keep_boxes(unlabelled, unlabelled["scores"] >= self.min_score)
        scores = image_uncertainty(unlabelled, self.measure, self.score_aggregate, self.sigmoid)
        distances = ObjectDistances(unlabelled["box_features"], unlabelled["offsets"], unlabelled["image_features"],
                                    self.aggregate, self.metric, self.image_term)
        return noris_greedy(scores, distances, budget, self.variant, self.similarity, self.alpha, update=self.update)
