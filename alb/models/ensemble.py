"""Ensembles (`alb.hooks.EnsembleHook`; Beluch et al. 2018): K members of one adapter,
trained independently from different seeds on the same labelled set. Member 0 uses the
run's own seed, so it is the model a single-model strategy would have trained: the
ensemble is evaluated through it, and its learning curve stays comparable."""

from __future__ import annotations

import numpy as np

from alb.progress import Progress
from alb.select.matching import matched_view_probs


def member_seed(seed: int, member: int) -> int:
    return seed if member == 0 else seed + 7919 * member  # a prime stride keeps members off other seeds


class EnsembleAdapter:
    """The adapter protocol over K members. `predict` adds `mc_probs (K, n, C)`
    (classification) or `mc_box_probs (K, M, C')` (detection: member 0's detections, each
    matched by IoU to every member's; member 0's own vectors are row 0)."""

    def __init__(self, members: list):
        self.members = members
        first = members[0]
        self.task, self.metric, self.metric_names = first.task, first.metric, first.metric_names
        self.cost_columns = first.cost_columns

    @property
    def records_meta(self) -> dict:
        return self.members[0].records_meta

    def labelling_cost(self, rows: np.ndarray) -> dict[str, int]:
        return self.members[0].labelling_cost(rows)

    def check_support(self) -> None:
        self.members[0].check_support()

    def reset(self, seed: int) -> None:
        for k, member in enumerate(self.members):
            member.reset(member_seed(seed, k))

    def state_dict(self) -> dict:
        return {"members": [m.state_dict() for m in self.members]}

    def load_state_dict(self, state: dict) -> None:
        for member, member_state in zip(self.members, state["members"], strict=True):
            member.load_state_dict(member_state)

    def fit(self, labelled_rows: np.ndarray, seed: int, progress: Progress | None = None, label: str = "train",
            checkpoint=None, tracker=None):
        """Train every member; the stats of the members together (skipped steps summed)."""
        stats = None
        for k, member in enumerate(self.members):  # each member has its own checkpoint file
            member_stats = member.fit(labelled_rows, member_seed(seed, k), progress,
                                      f"{label} member {k + 1}/{len(self.members)}",
                                      checkpoint.member(k) if checkpoint is not None else None, tracker=tracker)
            if stats is None:
                stats = member_stats
            elif member_stats is not None:
                stats.skipped_steps += member_stats.skipped_steps
        return stats

    def evaluate(self, *args, **kwargs) -> dict[str, float]:
        return self.members[0].evaluate(*args, **kwargs)

    def pseudo_labels(self, rows: np.ndarray):
        return self.members[0].pseudo_labels(rows)

    def set_pseudo_labels(self, pseudo) -> None:
        for member in self.members:
            member.set_pseudo_labels(pseudo)

    def predict(self, rows: np.ndarray, fields: tuple[str, ...], mc_passes: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
        if self.task == "classification":
            own = tuple(f for f in fields if f != "mc_probs")
            out = self.members[0].predict(rows, own) if own else {}
            if "mc_probs" in fields:
                out["mc_probs"] = np.stack([m.predict(rows, ("probs",))["probs"] for m in self.members])
            return out
        own = tuple(f for f in fields if f != "mc_box_probs")
        if "mc_box_probs" not in fields:
            return self.members[0].predict(rows, own)
        out = self.members[0].predict(rows, tuple(dict.fromkeys([*own, "boxes", "box_probs"])))
        stacked = [out["box_probs"]]
        kind = self.records_meta["probs_kind"]
        for member in self.members[1:]:
            stacked.append(matched_view_probs(out, member.predict(rows, ("boxes", "box_probs")), kind))
        out["mc_box_probs"] = np.stack(stacked)
        return out
