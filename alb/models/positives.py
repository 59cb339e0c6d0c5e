"""Positive predictions during training, for PPAL's DCUS (`alb.hooks.DifficultyHook`): for
every predicted box that the detector's own assigner made positive in a training batch,
its ground-truth class, P(b|gt) and IoU(b, gt).

torchvision computes the assignment inside its loss code and does not return it, so the
instance's loss entry points are wrapped (the same technique as the postprocess patch in
`detectors.py`): RetinaNet and FCOS through `head.compute_loss(targets, head_outputs,
anchors, matched_idxs)`, Faster R-CNN through `roi_heads.select_training_samples` and a
forward hook on `roi_heads.box_predictor`. The losses are unchanged.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from alb.engine.difficulty import paired_iou


def _dense_positives(coder, targets, head_outputs, anchors, matched_idxs, fcos: bool):
    """RetinaNet / FCOS: anchors with matched_idxs >= 0 are the positives."""
    classes, probs, ious = [], [], []
    for i, (target, matched) in enumerate(zip(targets, matched_idxs)):
        positive = matched >= 0
        if not positive.any() or len(target["labels"]) == 0:
            continue
        gt = matched[positive]
        labels = target["labels"][gt]
        logits = head_outputs["cls_logits"][i][positive].float()
        regression = head_outputs["bbox_regression"][i][positive].float()
        anchor = anchors[i][positive]
        boxes = coder.decode(regression, anchor) if fcos else coder.decode_single(regression, anchor)
        classes.append(labels)
        probs.append(torch.sigmoid(logits)[torch.arange(len(labels), device=labels.device), labels])
        ious.append(paired_iou(boxes, target["boxes"][gt].float()))
    return _cat(classes, probs, ious, anchors[0].device)


def _cat(classes, probs, ious, device):
    if not classes:
        return torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, device=device), torch.zeros(0, device=device)
    return torch.cat(classes), torch.cat(probs), torch.cat(ious)


def install(detector) -> bool:
    """Wrap `detector.model` (a torchvision detector) so that, while
    `detector.track_positives` is true, each training forward leaves
    `detector.positives = (classes (P,), P(b|gt) (P,), IoU (P,))` with classes in 0..C-1.
    Returns whether the architecture is supported (SSD is not: post-training mode)."""
    model, arch = detector.model, detector.arch
    if arch.startswith(("retinanet", "fcos")):
        head, original = model.head, model.head.compute_loss
        fcos = arch.startswith("fcos")

        def compute_loss(targets, head_outputs, anchors, matched_idxs):
            if detector.track_positives:
                with torch.no_grad():
                    detector.positives = _dense_positives(model.box_coder, targets, head_outputs, anchors,
                                                          matched_idxs, fcos)
            return original(targets, head_outputs, anchors, matched_idxs)

        head.compute_loss = compute_loss
        return True
    if arch.startswith("fasterrcnn"):
        roi_heads = model.roi_heads
        original = roi_heads.select_training_samples
        sampled = {}

        def select_training_samples(proposals, targets):
            out = original(proposals, targets)
            if detector.track_positives:
                sampled.update(proposals=out[0], matched=out[1], labels=out[2], targets=targets)
            return out

        def keep_outputs(module, inputs, output):
            if detector.track_positives and module.training and sampled:
                with torch.no_grad():
                    detector.positives = _roi_positives(roi_heads, sampled, *output)
                sampled.clear()

        roi_heads.select_training_samples = select_training_samples
        roi_heads.box_predictor.register_forward_hook(keep_outputs)
        return True
    return False


def _roi_positives(roi_heads, sampled, class_logits, box_regression):
    """Faster R-CNN: sampled proposals with a foreground label are the positives; the box
    is the proposal decoded with the regression of its ground-truth class."""
    proposals, labels = sampled["proposals"], torch.cat(sampled["labels"])
    boxes = roi_heads.box_coder.decode(box_regression.float(), proposals)  # (R, C + 1, 4)
    probs = F.softmax(class_logits.float(), dim=-1)
    gt_boxes = torch.cat([t["boxes"][m] if len(t["boxes"]) else t["boxes"].new_zeros((len(m), 4))
                          for t, m in zip(sampled["targets"], sampled["matched"])])
    positive = labels > 0
    rows, cls = torch.nonzero(positive).flatten(), labels[positive]
    if len(rows) == 0:
        return _cat([], [], [], labels.device)
    return cls - 1, probs[rows, cls], paired_iou(boxes[rows, cls], gt_boxes[rows].float())
