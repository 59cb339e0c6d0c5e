"""BADGE (Ash et al. 2020): k-means++ seeding on gradient embeddings, factorised so the
(N, C*D) embedding matrix is never built."""

from __future__ import annotations

from alb.select import badge_seeding
from alb.strategies.base import Strategy


class BADGE(Strategy):
    fields = ("probs", "embedding")

    def select(self, unlabelled, labelled, budget, rng):
        return badge_seeding(unlabelled["probs"], unlabelled["embedding"], budget, rng)
