"""NORIS (Hekimoglu et al.): least-confidence scores, reduced greedily by the similarity to
what is already selected (Sum: Alg. 1; Max: Eq. 8 by default, supp. Alg. 2 as max_alg2)."""

from __future__ import annotations

from alb import scoring
from alb.select import noris_greedy
from alb.select.noris import check_noris_params
from alb.strategies.base import Strategy


class NORIS(Strategy):
    fields = ("probs", "embedding")

    def __init__(self, variant: str = "sum", similarity: str = "gaussian", alpha: float = 0.5,
                 measure: str = "least_confidence"):
        check_noris_params(variant, similarity, alpha)
        self.variant, self.similarity, self.alpha, self.measure = variant, similarity, float(alpha), measure

    def select(self, unlabelled, labelled, budget, rng):
        scores = scoring.uncertainty(unlabelled["probs"], self.measure)
        return noris_greedy(scores, unlabelled["embedding"], budget, self.variant, self.similarity, self.alpha)
