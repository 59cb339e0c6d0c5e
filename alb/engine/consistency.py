"""Flip-consistency semi-supervised training (Elezi et al. Sec. 3.1, Eq. 2-6, after Jeong et
al.'s CSD), the engine side of `trainer.ssl=consistency`: an unlabelled image and its
horizontal flip pass through the detector; every candidate prediction of the image is
matched to the flipped image's candidate of largest IoU after un-flipping (Eq. 2); the
pair's class distributions are compared by the symmetric KL (Eq. 3) and its box parameters
by the squared distance (Eq. 4); L_con is the mean over matched pairs (Eq. 5).

No library implements it. A detector takes part by exposing
`dense_predictions(images) -> [(boxes (A, 4) xyxy in the input image's pixels, probs (A, C'))]`
with gradients (every anchor or heat-map cell, before NMS) and its `probs_kind`.

Choices the paper leaves open (README, "Elezi et al."):
- the candidates are each view's `top_k` predictions by their best foreground probability
  (the paper matches "the predictions"; all 8,732 SSD anchors x 8,732 would be 76M IoUs);
- box parameters (x0, y0, w, h) are the centre and size divided by the image width and
  height, so Eq. 4 does not depend on the image's pixel size; the flip's negation of x0
  (Eq. 4) is done by un-flipping the boxes before the comparison;
- for sigmoid heads (RetinaNet, CenterNet) the class "distribution" is C independent
  Bernoulli scores, and Eq. 3's KL is the sum of the per-class Bernoulli KLs.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import box_iou

from alb.datasets.detection import flip_boxes

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


def matched_pairs(boxes: torch.Tensor, probs: torch.Tensor, flip_boxes_back: torch.Tensor,
                  flip_probs: torch.Tensor, probs_kind: str, top_k: int | None = None):
    """Eq. 2: the `top_k` candidates of the first view (by foreground probability) and, for
    each, the other view's candidate (among its own `top_k`) of largest IoU with it, both in
    the same (unflipped) frame. -> (boxes, probs, boxes', probs') of the P pairs."""
    if top_k is not None:
        keep = foreground(probs.detach(), probs_kind).topk(min(top_k, len(probs))).indices
        keep_f = foreground(flip_probs.detach(), probs_kind).topk(min(top_k, len(flip_probs))).indices
        boxes, probs = boxes[keep], probs[keep]
        flip_boxes_back, flip_probs = flip_boxes_back[keep_f], flip_probs[keep_f]
    if len(boxes) == 0 or len(flip_boxes_back) == 0:
        return boxes[:0], probs[:0], flip_boxes_back[:0], flip_probs[:0]
    match = box_iou(boxes.detach().float(), flip_boxes_back.detach().float()).argmax(dim=1)
    return boxes, probs, flip_boxes_back[match], flip_probs[match]


def consistency_terms(boxes, probs, flip_boxes_back, flip_probs, width: float, height: float,
                      probs_kind: str, top_k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per matched pair of one image: the class term (Eq. 3) and the box term (Eq. 4), (P,) each."""
    b, p, bf, pf = matched_pairs(boxes, probs, flip_boxes_back, flip_probs, probs_kind, top_k)
    class_term = symmetric_kl(p, pf, probs_kind)
    box_term = (box_parameters(b.float(), width, height) - box_parameters(bf.float(), width, height)).pow(2).sum(1) / 4
    return class_term, box_term


def flip_consistency(model: nn.Module, images: list[torch.Tensor], top_k: int | None = 100) -> torch.Tensor:
    """L_con (Eq. 5) of a batch of unlabelled images (3, H, W): the mean of Eq. 3 plus the
    mean of Eq. 4 over every matched pair of the batch. One forward pass for the images and
    their flips together."""
    n = len(images)
    predictions = model.dense_predictions(list(images) + [im.flip(-1) for im in images])
    class_terms, box_terms = [], []
    for i, image in enumerate(images):
        height, width = image.shape[-2:]
        boxes, probs = predictions[i]
        flipped_boxes, flipped_probs = predictions[n + i]
        # Eq. 2 runs over the flipped view's predictions, each matched to the image's
        c, b = consistency_terms(flip_boxes(flipped_boxes, width), flipped_probs, boxes, probs, width, height,
                                 model.probs_kind, top_k)
        class_terms.append(c)
        box_terms.append(b)
    class_terms, box_terms = torch.cat(class_terms), torch.cat(box_terms)
    if len(class_terms) == 0:
        return sum(p.sum() for _, p in predictions) * 0.0
    return class_terms.mean() + box_terms.mean()
