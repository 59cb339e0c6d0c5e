"""Flip-consistency semi-supervised training (Elezi et al. Sec. 3.1, Eq. 2-6, after Jeong et
al.'s CSD), the engine side of `trainer.ssl=consistency`: an unlabelled image and its
horizontal flip pass through the detector; every candidate prediction of the image is
matched to the flipped image's candidate of largest IoU after un-flipping (Eq. 2); the
pair's class distributions are compared by the symmetric KL (Eq. 3) and its box parameters
by the squared distance (Eq. 4); L_con is the mean over matched pairs (Eq. 5).

No library implements it. A detector takes part by exposing
`dense_predictions(images) -> [(boxes (A, 4) xyxy in the input image's pixels, probs (A, C')[,
encoded (A, 4)])]` with gradients (every anchor or heat-map cell, before NMS) and its
`probs_kind`; `encoded` is the regression output itself (the anchor-relative offsets, SSD's
encoding with its variances), where the detector has one.

Readings (docs/fidelity.md; docs/detectors.md, "Semi-supervised flip consistency"):
- Eq. 4 compares "the displacement of the center and scale coefficients": the encoded
  offsets, the flipped view's x displacement negated (the authors' code), when the detector
  gives them (RetinaNet, SSD); `box_term="fraction"` (and CenterNet, which has no anchors)
  compares centre and size as fractions of the image instead, the flip undone on the boxes;
- the candidates (`candidates`): each view's `top_k` predictions by their best foreground
  probability (default: all 8,732 SSD anchors x 8,732 would be 76M IoUs), or `background`:
  every prediction whose best foreground probability beats the background's (the authors'
  code; sigmoid heads: beats 0.5);
- for sigmoid heads (RetinaNet, CenterNet) the class "distribution" is C independent
  Bernoulli scores, and Eq. 3's KL is the sum of the per-class Bernoulli KLs.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn
from torchvision.ops import box_iou

from alb.datasets.detection import flip_boxes
from alb.errors import check_choice

_EPS = 1e-6


def symmetric_kl(p: torch.Tensor, q: torch.Tensor, probs_kind: str = "softmax") -> torch.Tensor:
    """Eq. 3 row-wise: (KL(p || q) + KL(q || p)) / 2 for (P, C') rows -> (P,). Softmax rows
    are distributions; sigmoid rows are C' Bernoulli scores whose KLs are summed."""
    p, q = p.float().clamp(_EPS, 1 - _EPS), q.float().clamp(_EPS, 1 - _EPS)
    if probs_kind == "sigmoid":
        # (p - q) (log p - log q) + ((1-p) - (1-q)) (log(1-p) - log(1-q)), summed over classes
        both = (p - q) * (p.log() - q.log()) + (q - p) * ((1 - p).log() - (1 - q).log())
    elif probs_kind == "softmax":
        both = (p - q) * (p.log() - q.log())  # KL(p||q) + KL(q||p) = sum (p - q)(log p - log q)
    else:
        raise ValueError(f"probs_kind must be softmax or sigmoid, got {probs_kind!r}")
    return both.sum(dim=-1) / 2


def box_parameters(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """(x0, y0, w, h): centre and size of xyxy boxes (P, 4), as fractions of the image."""
    scale = boxes.new_tensor([width, height])
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 / scale
    size = (boxes[:, 2:] - boxes[:, :2]) / scale
    return torch.cat([centre, size], dim=1)


def foreground(probs: torch.Tensor, probs_kind: str) -> torch.Tensor:
    """Best foreground probability of each row (A,) (softmax rows: background is last)."""
    return (probs[:, :-1] if probs_kind == "softmax" else probs).amax(dim=1)


CANDIDATES = ("top_k", "background")
BOX_TERMS = ("encoded", "fraction")


def candidate_rows(probs: torch.Tensor, probs_kind: str, top_k: int | None, rule: str = "top_k") -> torch.Tensor:
    """The predictions of one view that enter Eq. 2: the `top_k` by best foreground
    probability (all with None), or those whose best foreground beats the background."""
    fg = foreground(probs.detach(), probs_kind)
    if rule == "background":
        background = probs.detach()[:, -1] if probs_kind == "softmax" else torch.full_like(fg, 0.5)
        return torch.nonzero(fg > background).flatten()
    if top_k is None:
        return torch.arange(len(probs), device=probs.device)
    return fg.topk(min(top_k, len(probs))).indices


def matched_pairs(boxes: torch.Tensor, probs: torch.Tensor, flip_boxes_back: torch.Tensor,
                  flip_probs: torch.Tensor, probs_kind: str, top_k: int | None = None, rule: str = "top_k"):
    """Eq. 2: the candidates of the first view and, for each, the other view's candidate of
    largest IoU with it, both in the same (unflipped) frame. -> (rows of the first view,
    their matches' rows in the second), (P,) each."""
    keep = candidate_rows(probs, probs_kind, top_k, rule)
    keep_f = candidate_rows(flip_probs, probs_kind, top_k, rule)
    if len(keep) == 0 or len(keep_f) == 0:
        return keep[:0], keep_f[:0]
    match = box_iou(boxes[keep].detach().float(), flip_boxes_back[keep_f].detach().float()).argmax(dim=1)
    return keep, keep_f[match]


def consistency_terms(boxes, probs, flip_boxes_back, flip_probs, width: float, height: float,
                      probs_kind: str, top_k: int | None = None, encoded: torch.Tensor | None = None,
                      other_encoded: torch.Tensor | None = None, rule: str = "top_k",
                      box_term: str = "encoded") -> tuple[torch.Tensor, torch.Tensor]:
    """Per matched pair of one image: the class term (Eq. 3) and the box term (Eq. 4), (P,)
    each. The first view is the flipped one (its boxes `boxes` already un-flipped): with
    `encoded` (its regression outputs) and `other_encoded` (the image's), Eq. 4 compares
    the offsets, the flipped view's x displacement negated; otherwise centre and size as
    fractions of the image."""
    rows, other = matched_pairs(boxes, probs, flip_boxes_back, flip_probs, probs_kind, top_k, rule)
    class_term = symmetric_kl(probs[rows], flip_probs[other], probs_kind)
    if box_term == "encoded" and encoded is not None and other_encoded is not None:
        mirrored = encoded[rows].float() * encoded.new_tensor([-1.0, 1.0, 1.0, 1.0])
        return class_term, (mirrored - other_encoded[other].float()).pow(2).sum(1) / 4
    first, second = boxes[rows].float(), flip_boxes_back[other].float()
    return class_term, (box_parameters(first, width, height) - box_parameters(second, width, height)).pow(2).sum(1) / 4


def flip_consistency(model: nn.Module, images: list[torch.Tensor], top_k: int | None = 100,
                     candidates: str = "top_k", box_term: str = "encoded", forward_context=None) -> torch.Tensor:
    """L_con (Eq. 5) of a batch of images (3, H, W): the mean of Eq. 3 plus the mean of Eq. 4
    over every matched pair of the batch. One forward pass for the images and their flips
    together, under `forward_context` (the training's autocast); the matching and the terms
    in float32 outside it."""
    check_choice("consistency candidates", candidates, CANDIDATES)
    check_choice("consistency box_term", box_term, BOX_TERMS)
    n = len(images)
    with forward_context if forward_context is not None else nullcontext():
        predictions = model.dense_predictions(list(images) + [im.flip(-1) for im in images])
    predictions = [tuple(t.float() for t in entry) for entry in predictions]
    class_terms, box_terms = [], []
    for i, image in enumerate(images):
        height, width = image.shape[-2:]
        boxes, probs, *encoded = predictions[i]
        flipped_boxes, flipped_probs, *flipped_encoded = predictions[n + i]
        # Eq. 2 runs over the flipped view's predictions, each matched to the image's
        c, b = consistency_terms(flip_boxes(flipped_boxes, width), flipped_probs, boxes, probs, width, height,
                                 model.probs_kind, top_k, flipped_encoded[0] if flipped_encoded else None,
                                 encoded[0] if encoded else None, candidates, box_term)
        class_terms.append(c)
        box_terms.append(b)
    class_terms, box_terms = torch.cat(class_terms), torch.cat(box_terms)
    if len(class_terms) == 0:
        return sum(entry[1].sum() for entry in predictions) * 0.0
    return class_terms.mean() + box_terms.mean()
