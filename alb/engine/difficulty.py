"""PPAL's DCUS class difficulties (PPAL Sec. 3.2, Eq. 1-3), the engine side of
`alb.hooks.DifficultyHook`: the per-box difficulty q of positive predictions and the
class-wise EMA with per-class momentum. No library has it."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou


def box_difficulty(class_prob, iou, xi: float = 0.6):
    """Eq. 1: q = 1 - P(b|gt)^xi * IoU(b, gt)^(1 - xi), elementwise (numpy or torch)."""
    if isinstance(class_prob, torch.Tensor):
        return 1.0 - class_prob.clamp(0, 1) ** xi * iou.clamp(0, 1) ** (1.0 - xi)
    return 1.0 - np.clip(class_prob, 0, 1) ** xi * np.clip(iou, 0, 1) ** (1.0 - xi)


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of a[i] with b[i] (P,), xyxy boxes (P, 4)."""
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area = lambda x: (x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-12)


class DifficultyTracker:
    """Class difficulties d (C,), initialised to 1, and momenta m (C,), initialised to m0.

    One `update(labels, q)` per training iteration, with the ground-truth class and the
    difficulty of every positive predicted box of the batch (Eq. 2-3): for a class i with
    N_i > 0 boxes, d_i <- m_i d_i + (1 - m_i) mean(q of those boxes) and then m_i <- m0; for a
    class without boxes, d_i stays and m_i <- m0 * m_i (so it catches up faster next time).
    """

    def __init__(self, num_classes: int, momentum: float = 0.99):
        self.m0 = float(momentum)
        self.difficulty = np.ones(num_classes)
        self.momentum = np.full(num_classes, self.m0)
        self.counts = np.zeros(num_classes, dtype=np.int64)  # positives seen per class

    def update(self, labels, q) -> None:
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
        q = np.asarray(q.detach().float().cpu() if isinstance(q, torch.Tensor) else q, dtype=np.float64)
        c = len(self.difficulty)
        n = np.bincount(labels, minlength=c)[:c]
        total = np.bincount(labels, weights=q, minlength=c)[:c]
        present = n > 0
        mean = np.divide(total, n, out=np.zeros(c), where=present)
        self.difficulty = np.where(present, self.momentum * self.difficulty + (1 - self.momentum) * mean,
                                   self.difficulty)
        self.momentum = np.where(present, self.m0, self.m0 * self.momentum)
        self.counts += n


def matched_difficulties(detection: dict, target: dict, xi: float, iou_threshold: float = 0.5):
    """Post-training approximation: each detection whose best-overlapping ground-truth box
    has IoU >= iou_threshold is a positive of that box; returns (gt labels (P,), q (P,)).
    P(b|gt) is the detection's class vector at the ground-truth class."""
    boxes, gt_boxes = torch.as_tensor(detection["boxes"]), torch.as_tensor(target["boxes"]).float()
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    iou = box_iou(boxes.float(), gt_boxes)  # (k, g)
    best, which = iou.max(dim=1)
    keep = best >= iou_threshold
    gt_labels = torch.as_tensor(target["labels"]).long()[which[keep]]
    probs = torch.as_tensor(detection["box_probs"])[keep]
    p = probs[torch.arange(len(probs)), gt_labels]
    return gt_labels.numpy(), box_difficulty(p.float(), best[keep], xi).numpy()
