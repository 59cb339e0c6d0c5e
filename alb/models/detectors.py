"""Detectors behind one protocol (SPEC section 2), all from random initialisation.

Every detector is an `nn.Module` with
- `losses(images, targets) -> {name: scalar}` in train mode; images: list of float (3, H, W)
  in [0, 1] at their own size; targets: one dict per image, `boxes (m, 4)` xyxy pixels and
  `labels (m,)` in 0..C-1;
- `detect(images) -> list of dicts` in eval mode, one per image, after NMS and the score
  threshold, boxes in the input image's pixels: `boxes (k, 4)`, `scores (k,)`, `labels (k,)`,
  `box_probs (k, C')`, `box_features (k, D)` (RoI-aligned from `feature_level`),
  `image_feature (D,)` (global average pool of the same map);
- `probs_kind`: "softmax" (C' = C + 1, background last, the rows sum to 1) or "sigmoid"
  (C' = C, independent per-class scores);
- `score_is_probability`: whether the score is the class probability, in which case
  `box_probs[j, labels[j]] == scores[j]` (not for FCOS: score = sqrt(p * centerness)).

CenterNet is written here (no maintained library ships it for torchvision backbones); the
torchvision detectors are torchvision's own, with `postprocess_detections` replaced on the
instance by a copy that carries the candidate index through top-k and NMS, so the class
vector of each kept box is the one it came from. Boxes, scores and labels are unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.models.detection import backbone_utils
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes, roi_align

from alb.engine.difficulty import paired_iou
from alb.models import positives

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pool_features(feature_maps: torch.Tensor, boxes: list[torch.Tensor], spatial_scale: float) -> list[torch.Tensor]:
    """RoI-align (2x2 bins, averaged) of each image's `boxes[i] (k_i, 4)` on its map
    `feature_maps[i]` (B, D, h, w), in one call for the batch -> [(k_i, D)]. Boxes are in
    the map's input pixels; `spatial_scale` = map size / input size."""
    counts = [len(b) for b in boxes]
    if sum(counts) == 0:
        return [feature_maps.new_zeros((0, feature_maps.shape[1]), dtype=torch.float32) for _ in boxes]
    pooled = roi_align(feature_maps.float(), [b.float() for b in boxes], output_size=(2, 2),
                       spatial_scale=spatial_scale, sampling_ratio=2, aligned=True)
    return list(pooled.mean(dim=(2, 3)).split(counts))


@contextmanager
def probing(module: nn.Module):
    """`module` in eval mode without gradients for a shape probe; its mode restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


def resize_square(images: list[torch.Tensor], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear resize of each (3, H, W) image to (3, size, size), stacked; and the per-image
    (sx, sy) = (size / W, size / H) that map boxes into the resized frame."""
    batch = torch.stack([F.interpolate(im[None], size=(size, size), mode="bilinear", align_corners=False)[0]
                         for im in images])
    scales = torch.tensor([[size / im.shape[-1], size / im.shape[-2]] for im in images], device=batch.device)
    return batch, scales


# ----------------------------------------------------------------------------------------
# CenterNet (Zhou et al. 2019, "Objects as Points"): heat map + size + offset at stride 4.


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyBackbone(nn.Module):
    """Five stride-2 conv stages (stride 32), for a detector that trains in minutes on CPU."""

    def __init__(self, width: int = 16):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        layers, cin = [], 3
        for w in widths:
            layers += [_conv(cin, w, 2), _conv(w, w)]
            cin = w
        self.stages = nn.ModuleList(nn.Sequential(*layers[2 * i:2 * i + 2]) for i in range(5))
        self.out_channels = widths[-1]
        self.skip_channels = {16: widths[3], 8: widths[2], 4: widths[1]}

    def forward(self, x):
        """-> the stride-32 map and {stride: map} for strides 16, 8, 4."""
        skips = {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            skips[2 ** (i + 1)] = x
        return x, skips


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its pooling and classifier (stride 32)."""

    def __init__(self, depth: int = 18):
        super().__init__()
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.out_channels = net.fc.in_features
        expansion = self.out_channels // 512
        self.skip_channels = {16: 256 * expansion, 8: 128 * expansion, 4: 64 * expansion}

    def forward(self, x):
        """-> the stride-32 map and {stride: map} for strides 4, 8, 16."""
        x, skips = self.stem(x), {}
        for stride, layer in zip((4, 8, 16, 32), self.layers):
            x = layer(x)
            skips[stride] = x
        return x, skips


class CenterNet(nn.Module):
    """CenterNet with a plain-conv upsampling neck (3 x [conv, 2x transposed conv]) on a
    ResNet or tiny backbone, optionally with skip connections from the backbone. Its intermediate maps are f1 (backbone output, stride 32), f2,
    f3 and f4 (neck stages, strides 16, 8, 4; the heads read f4), NORIS supp. Sec. 5.

    Differences from the paper's detector: no deformable convolutions; the heat-map splat is
    an axis-aligned Gaussian with sigma = 0.54 * size / 6 (TTFNet) instead of CornerNet's
    radius rule; images are resized to `image_size` squared (no aspect-preserving crop).
    """

    probs_kind = "sigmoid"
    score_is_probability = True
    stride = 4
    supports_positives = True  # `losses` can record its positive predictions (PPAL's DCUS)
    supports_consistency = True  # `dense_predictions` for flip-consistency training
    supports_pseudo_labels = True  # Eq. 8 of Elezi et al. in `losses`
    supports_loss_prediction = True  # `losses` can leave per-image losses and the level maps
    track_positives = False
    positives = None
    track_image_losses = False
    image_losses = level_maps = None

    def __init__(self, num_classes: int, backbone: str = "resnet18", image_size: int = 512,
                 neck_channels: tuple[int, int, int] = (256, 128, 64), head_channels: int = 64,
                 feature_level: str = "f4", score_threshold: float = 0.05, max_detections: int = 100,
                 tiny_width: int = 16, size_weight: float = 0.1, skip_connections: bool = False):
        super().__init__()
        if feature_level not in ("f1", "f2", "f3", "f4"):
            raise ValueError(f"CenterNet feature_level must be f1..f4, got {feature_level!r}")
        self.num_classes, self.image_size, self.feature_level = num_classes, image_size, feature_level
        self.score_threshold, self.max_detections, self.size_weight = score_threshold, max_detections, size_weight
        self.backbone = TinyBackbone(tiny_width) if backbone == "tiny" else ResNetBackbone(int(backbone.removeprefix("resnet")))
        cin, stages = self.backbone.out_channels, []
        for cout in neck_channels:
            stages.append(nn.Sequential(_conv(cin, cout), nn.ConvTranspose2d(cout, cout, 4, 2, 1, bias=False),
                                        nn.BatchNorm2d(cout), nn.ReLU(inplace=True)))
            cin = cout
        self.neck = nn.ModuleList(stages)
        # Optional U-Net style skips (1x1 projections of the backbone maps added to the neck
        # maps at strides 16, 8, 4): without them a from-scratch tiny model learns slowly.
        self.skips = nn.ModuleList(nn.Conv2d(self.backbone.skip_channels[s], c, 1)
                                   for s, c in zip((16, 8, 4), neck_channels)) if skip_connections else None
        self.channels = {"f1": self.backbone.out_channels, "f2": neck_channels[0], "f3": neck_channels[1],
                         "f4": neck_channels[2]}
        self.strides = {"f1": 32, "f2": 16, "f3": 8, "f4": 4}

        def head(cout):
            return nn.Sequential(nn.Conv2d(cin, head_channels, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(head_channels, cout, 1))
        self.heatmap, self.size, self.offset = head(num_classes), head(2), head(2)
        self.head_input = nn.Identity()  # what the three heads read: where MC dropout goes
        nn.init.constant_(self.heatmap[-1].bias, -2.19)  # prior 0.1, as the paper
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    @property
    def feature_dim(self) -> int:
        return self.channels[self.feature_level]

    def _batch(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Resize to image_size squared and normalise; also the per-image (sx, sy) scales."""
        batch, scales = resize_square(images, self.image_size)
        return (batch - self.mean) / self.std, scales

    def _forward(self, x: torch.Tensor):
        y, backbone_maps = self.backbone(x)
        maps = {"f1": y}
        for k, (name, stage) in enumerate(zip(("f2", "f3", "f4"), self.neck)):
            y = stage(y)
            if self.skips is not None:
                y = y + self.skips[k](backbone_maps[(16, 8, 4)[k]])
            maps[name] = y
        y = self.head_input(y)
        return self.heatmap(y), self.size(y), self.offset(y), maps

    @property
    def dropout_site(self) -> nn.Module:
        """The module whose input every head reads (MC dropout is applied there)."""
        return self.head_input

    def _targets(self, targets: list[dict], scales: torch.Tensor, out: int):
        """Heat map (B, C, out, out), and per object: batch index, flat centre index, size
        and offset targets (in output-stride units)."""
        device = scales.device
        heat = torch.zeros(len(targets), self.num_classes, out, out, device=device)
        grid = torch.arange(out, device=device, dtype=torch.float32)
        index, flat, size, offset, classes = [], [], [], [], []
        for b, t in enumerate(targets):
            boxes = t["boxes"].to(device).float() * scales[b].repeat(2) / self.stride
            boxes = boxes.clamp(0, out - 1e-3)
            for box, label in zip(boxes, t["labels"].tolist()):
                w, h = (box[2] - box[0]).item(), (box[3] - box[1]).item()
                if w <= 0 or h <= 0:
                    continue
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                ix, iy = int(cx), int(cy)
                sx, sy = max(0.54 * w / 6, 0.3), max(0.54 * h / 6, 0.3)
                g = torch.exp(-((grid - ix) ** 2)[None, :] / (2 * sx ** 2) - ((grid - iy) ** 2)[:, None] / (2 * sy ** 2))
                heat[b, label] = torch.maximum(heat[b, label], g)
                index.append(b)
                flat.append(iy * out + ix)
                size.append([w, h])
                offset.append([cx.item() - ix, cy.item() - iy])
                classes.append(label)
        as_tensor = lambda v, dt: torch.tensor(v, device=device, dtype=dt)  # noqa: E731
        return heat, as_tensor(index, torch.long), as_tensor(flat, torch.long), \
            as_tensor(size, torch.float32).reshape(-1, 2), as_tensor(offset, torch.float32).reshape(-1, 2), \
            as_tensor(classes, torch.long)

    LEVELS = ("f1", "f2", "f3", "f4")

    @property
    def level_channels(self) -> list[int]:
        """Channels of the multi-level maps a learning-loss module reads (f1..f4)."""
        return [self.channels[k] for k in self.LEVELS]

    def feature_levels(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """The maps f1..f4 of a batch (for the learning-loss module at prediction)."""
        x, _ = self._batch(images)
        maps = self._forward(x)[3]
        return [maps[k] for k in self.LEVELS]

    def losses(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        x, scales = self._batch(images)
        heat_logits, size, offset, maps = self._forward(x)
        out = heat_logits.shape[-1]
        heat_t, index, flat, size_t, offset_t, classes = self._targets(targets, scales, out)
        heat_logits = heat_logits.float()
        # Focal loss of CornerNet (alpha 2, beta 4), normalised by the number of objects.
        p = torch.sigmoid(heat_logits).clamp(1e-4, 1 - 1e-4)
        positive = heat_t.eq(1).float()
        pos_loss = -(torch.log(p) * (1 - p) ** 2 * positive).sum()
        # Elezi Eq. 8: a pseudo-labelled image has only positives; what its pseudo-labels do
        # not cover is not penalised as background.
        background = torch.tensor([0.0 if bool(t.get("pseudo", False)) else 1.0 for t in targets],
                                  device=p.device).view(-1, 1, 1, 1)
        neg_loss = -(torch.log(1 - p) * p ** 2 * (1 - heat_t) ** 4 * (1 - positive) * background).sum()
        n = max(len(flat), 1)
        losses = {"heatmap": (pos_loss + neg_loss) / n}
        if len(flat):
            size_p = size.float().flatten(2)[index, :, flat]
            offset_p = offset.float().flatten(2)[index, :, flat]
            losses["size"] = self.size_weight * F.l1_loss(size_p, size_t, reduction="sum") / n
            losses["offset"] = F.l1_loss(offset_p, offset_t, reduction="sum") / n
        else:
            losses["size"] = losses["offset"] = size.sum() * 0.0
        if self.track_positives:
            self.positives = self._positives(p, size, offset, index, flat, size_t, offset_t, classes)
        if self.track_image_losses:  # learning loss: the loss each image would have alone
            self.level_maps = [maps[k] for k in self.LEVELS]
            self.image_losses = self._image_losses(p, heat_t, positive, background, size, offset, index, flat,
                                                   size_t, offset_t, len(targets))
        return losses

    @torch.no_grad()
    def _image_losses(self, p, heat_t, positive, background, size, offset, index, flat, size_t, offset_t, b):
        """(B,): the loss of `losses` computed for each image on its own (normalised by its
        own object count)."""
        pos = -(torch.log(p) * (1 - p) ** 2 * positive).sum(dim=(1, 2, 3))
        neg = -(torch.log(1 - p) * p ** 2 * (1 - heat_t) ** 4 * (1 - positive) * background).sum(dim=(1, 2, 3))
        objects = torch.bincount(index, minlength=b).float().clamp(min=1) if len(flat) else p.new_ones(b)
        box = p.new_zeros(b)
        if len(flat):
            size_l1 = (size.float().flatten(2)[index, :, flat] - size_t).abs().sum(1)
            offset_l1 = (offset.float().flatten(2)[index, :, flat] - offset_t).abs().sum(1)
            box = box.index_add(0, index, self.size_weight * size_l1 + offset_l1)
        return (pos + neg + box) / objects

    @torch.no_grad()
    def _positives(self, p, size, offset, index, flat, size_t, offset_t, classes):
        """(ground-truth class, P(b|gt), IoU(b, gt)) of each object's centre prediction: the
        box decoded at the ground-truth centre against the ground-truth box (stride units)."""
        if len(flat) == 0:
            empty = p.new_zeros(0)
            return classes, empty, empty
        out = p.shape[-1]
        prob = p.flatten(2)[index, classes, flat]
        centre = torch.stack([flat % out, flat // out], dim=1).float()
        pred_c, gt_c = centre + offset.float().flatten(2)[index, :, flat], centre + offset_t
        pred_wh, gt_wh = size.float().flatten(2)[index, :, flat].clamp(min=0), size_t
        pred = torch.cat([pred_c - pred_wh / 2, pred_c + pred_wh / 2], dim=1)
        gt = torch.cat([gt_c - gt_wh / 2, gt_c + gt_wh / 2], dim=1)
        return classes, prob, paired_iou(pred, gt)

    def dense_predictions(self, images: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every output cell as a prediction, with gradients: per image, boxes (h*w, 4) decoded
        at each cell in the input image's pixels, and the cell's sigmoid class scores (h*w, C)."""
        x, scales = self._batch(images)
        heat_logits, size, offset, _ = self._forward(x)
        b, c, h, w = heat_logits.shape
        ys, xs = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
        out = []
        for i in range(b):
            off, wh = offset[i].float().flatten(1), size[i].float().flatten(1).clamp(min=0)
            cx, cy = (xs.flatten() + off[0]) * self.stride, (ys.flatten() + off[1]) * self.stride
            bw, bh = wh[0] * self.stride, wh[1] * self.stride
            boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1) / scales[i].repeat(2)
            out.append((boxes, torch.sigmoid(heat_logits[i].float()).flatten(1).T))
        return out

    @torch.no_grad()
    def detect(self, images: list[torch.Tensor], al_outputs: bool = True) -> list[dict]:
        """`al_outputs=False`: boxes, scores and labels only (for measuring the overhead)."""
        x, scales = self._batch(images)
        heat_logits, size, offset, maps = self._forward(x)
        heat = torch.sigmoid(heat_logits.float())
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)  # 3x3 max-pool NMS
        b, c, h, w = heat.shape
        k = min(self.max_detections, c * h * w)
        scores, flat = peaks.flatten(1).topk(k)
        feature_map = maps[self.feature_level]
        results, boxes_in_all = [], []
        for i in range(b):
            keep = scores[i] > self.score_threshold
            s, f = scores[i][keep], flat[i][keep]
            labels, pos = f // (h * w), f % (h * w)
            ys, xs = (pos // w).float(), (pos % w).float()
            off = offset[i].float().flatten(1)[:, pos]
            wh = size[i].float().flatten(1)[:, pos].clamp(min=0)
            cx, cy = (xs + off[0]) * self.stride, (ys + off[1]) * self.stride
            bw, bh = wh[0] * self.stride, wh[1] * self.stride
            boxes_in = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1)
            boxes_in = clip_boxes_to_image(boxes_in, (self.image_size, self.image_size))
            boxes_in_all.append(boxes_in)
            result = {"boxes": boxes_in / scales[i].repeat(2), "scores": s, "labels": labels}
            if al_outputs:
                result["box_probs"] = heat[i].flatten(1)[:, pos].T  # (k, C): the peak's class vector
            results.append(result)
        if al_outputs:
            box_features = pool_features(feature_map, boxes_in_all, feature_map.shape[-1] / self.image_size)
            image_features = feature_map.float().mean(dim=(2, 3))
            for result, feats, image_feature in zip(results, box_features, image_features):
                result.update(box_features=feats, image_feature=image_feature)
        return results


# ----------------------------------------------------------------------------------------
# torchvision detectors with the class vector carried through NMS.


def _dense_postprocess(head, sink: list, centerness: bool):
    """RetinaNet / FCOS `postprocess_detections` that also records, per kept box, the
    sigmoid class vector of the anchor it came from (torchvision's logic otherwise)."""

    def postprocess(head_outputs, anchors, image_shapes):
        detections = []
        for index, image_shape in enumerate(image_shapes):
            boxes_all, scores_all, labels_all, probs_all = [], [], [], []
            levels = zip(head_outputs["bbox_regression"], head_outputs["cls_logits"], anchors[index],
                         head_outputs["bbox_ctrness"] if centerness else head_outputs["cls_logits"])
            for regression, logits, level_anchors, ctr in levels:
                regression, logits, ctr = regression[index], logits[index], ctr[index]
                num_classes = logits.shape[-1]
                probs = torch.sigmoid(logits)
                scores = torch.sqrt(probs * torch.sigmoid(ctr)).flatten() if centerness else probs.flatten()
                candidates = torch.where(scores > head.score_thresh)[0]
                scores = scores[candidates]
                scores, order = scores.topk(min(head.topk_candidates, candidates.numel()))
                candidates = candidates[order]
                anchor = torch.div(candidates, num_classes, rounding_mode="floor")
                decode = head.box_coder.decode if centerness else head.box_coder.decode_single
                boxes = decode(regression[anchor], level_anchors[anchor]).reshape(-1, 4)
                boxes_all.append(clip_boxes_to_image(boxes, image_shape))
                scores_all.append(scores)
                labels_all.append(candidates % num_classes)
                probs_all.append(probs[anchor])
            boxes, scores = torch.cat(boxes_all), torch.cat(scores_all)
            labels, probs = torch.cat(labels_all), torch.cat(probs_all)
            keep = batched_nms(boxes, scores, labels, head.nms_thresh)[: head.detections_per_img]
            detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
            sink.append(probs[keep])
        return detections

    return postprocess


def _background_last(probs: torch.Tensor) -> torch.Tensor:
    """torchvision puts background at index 0; the protocol puts it last."""
    return torch.cat([probs[:, 1:], probs[:, :1]], dim=1)


def _ssd_postprocess(head, sink: list):
    """SSD `postprocess_detections` that records the softmax vector of each kept anchor."""

    def postprocess(head_outputs, image_anchors, image_shapes):
        all_probs = F.softmax(head_outputs["cls_logits"], dim=-1)
        detections = []
        for regression, probs, anchors, image_shape in zip(head_outputs["bbox_regression"], all_probs,
                                                           image_anchors, image_shapes):
            boxes = clip_boxes_to_image(head.box_coder.decode_single(regression, anchors), image_shape)
            kept_boxes, kept_scores, kept_labels, kept_anchor = [], [], [], []
            for label in range(1, probs.shape[-1]):
                candidates = torch.where(probs[:, label] > head.score_thresh)[0]
                score, order = probs[candidates, label].topk(min(head.topk_candidates, candidates.numel()))
                candidates = candidates[order]
                kept_boxes.append(boxes[candidates])
                kept_scores.append(score)
                kept_labels.append(torch.full_like(candidates, label))
                kept_anchor.append(candidates)
            b, s = torch.cat(kept_boxes), torch.cat(kept_scores)
            labels, anchor = torch.cat(kept_labels), torch.cat(kept_anchor)
            keep = batched_nms(b, s, labels, head.nms_thresh)[: head.detections_per_img]
            detections.append({"boxes": b[keep], "scores": s[keep], "labels": labels[keep]})
            sink.append(_background_last(probs[anchor[keep]]))
        return detections

    return postprocess


def _roi_postprocess(roi_heads, sink: list):
    """Faster R-CNN box-head postprocess: flatten proposal x class candidates, keep each
    candidate's proposal index through NMS, record that proposal's softmax vector."""

    def postprocess(class_logits, box_regression, proposals, image_shapes):
        num_classes = class_logits.shape[-1]
        per_image = [len(p) for p in proposals]
        pred_boxes = roi_heads.box_coder.decode(box_regression, proposals).split(per_image)
        pred_probs = F.softmax(class_logits, -1).split(per_image)
        out_boxes, out_scores, out_labels = [], [], []
        for boxes, probs, image_shape in zip(pred_boxes, pred_probs, image_shapes):
            boxes = clip_boxes_to_image(boxes, image_shape)[:, 1:].reshape(-1, 4)
            labels = torch.arange(1, num_classes, device=probs.device).repeat(len(probs))
            proposal = torch.arange(len(probs), device=probs.device).repeat_interleave(num_classes - 1)
            scores = probs[:, 1:].reshape(-1)
            keep = torch.where(scores > roi_heads.score_thresh)[0]
            keep = keep[remove_small_boxes(boxes[keep], min_size=1e-2)]
            keep = keep[batched_nms(boxes[keep], scores[keep], labels[keep], roi_heads.nms_thresh)]
            keep = keep[: roi_heads.detections_per_img]
            out_boxes.append(boxes[keep])
            out_scores.append(scores[keep])
            out_labels.append(labels[keep])
            sink.append(_background_last(probs[proposal[keep]]))
        return out_boxes, out_scores, out_labels

    return postprocess


ARCHITECTURES = ("fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "retinanet_resnet18_fpn",
                 "retinanet_resnet50_fpn", "fcos_resnet50_fpn", "ssd300_vgg16", "ssdlite320_mobilenet_v3_large")
# torchvision's SSD transforms resize to this whatever image_size says.
FIXED_INPUT_SIZE = {"ssd300_vgg16": 300, "ssdlite320_mobilenet_v3_large": 320}


def fixed_input_size(model_node) -> int | None:
    """The input size a model config cannot change (SSD), else None."""
    return FIXED_INPUT_SIZE.get(model_node.get("arch"))


def _pseudo(targets) -> list[bool]:
    return [bool(t.get("pseudo", False)) for t in targets]


def _install_pseudo_label_loss(model: nn.Module, arch: str) -> None:
    """Elezi Eq. 8 on the instance: anchors of a pseudo-labelled image that match no
    pseudo-label are not trained as background. Batches without a pseudo-labelled image go
    through torchvision's own loss unchanged."""
    if arch.startswith("retinanet"):
        head, original = model.head, model.head.compute_loss  # may already carry the DCUS wrapper

        def compute_loss(targets, head_outputs, anchors, matched_idxs):
            pseudo = _pseudo(targets)
            if any(pseudo):  # background (-1) becomes "ignored" (-2, between the IoU thresholds)
                matched_idxs = [torch.where(m == -1, torch.full_like(m, -2), m) if p else m
                                for m, p in zip(matched_idxs, pseudo)]
            return original(targets, head_outputs, anchors, matched_idxs)

        head.compute_loss = compute_loss
        return
    original = model.compute_loss

    def ssd_compute_loss(targets, head_outputs, anchors, matched_idxs):
        pseudo = _pseudo(targets)
        if not any(pseudo):
            return original(targets, head_outputs, anchors, matched_idxs)
        return _ssd_loss(model, targets, head_outputs, anchors, matched_idxs, pseudo)

    model.compute_loss = ssd_compute_loss


def _ssd_loss(model, targets, head_outputs, anchors, matched_idxs, pseudo):
    """SSD's MultiBox loss (smooth L1 on matched anchors, cross-entropy on them and on the
    hardest `neg_to_pos_ratio` x positives background anchors) with no hard negatives taken
    from a pseudo-labelled image: Eq. 8."""
    logits = head_outputs["cls_logits"]
    n_foreground, box_losses, classes = 0, [], []
    for target, regression, image_logits, image_anchors, matched in zip(
            targets, head_outputs["bbox_regression"], logits, anchors, matched_idxs):
        foreground = torch.where(matched >= 0)[0]
        gt = matched[foreground]
        n_foreground += len(foreground)
        encoded = model.box_coder.encode_single(target["boxes"][gt], image_anchors[foreground])
        box_losses.append(F.smooth_l1_loss(regression[foreground], encoded, reduction="sum"))
        image_classes = torch.zeros(len(image_logits), dtype=torch.long, device=image_logits.device)
        image_classes[foreground] = target["labels"][gt]
        classes.append(image_classes)
    classes = torch.stack(classes)  # (B, A), 0 = background
    ce = F.cross_entropy(logits.flatten(0, 1), classes.flatten(), reduction="none").view_as(classes)
    is_foreground = classes > 0
    allowed = torch.tensor([not p for p in pseudo], device=ce.device)[:, None]
    n_negative = model.neg_to_pos_ratio * is_foreground.sum(1, keepdim=True) * allowed
    ranked = ce.masked_fill(is_foreground, -float("inf")).argsort(1, descending=True).argsort(1)
    hard_negative = ranked < n_negative
    scale = max(1, n_foreground)
    return {"bbox_regression": torch.stack(box_losses).sum() / scale,
            "classification": (ce[is_foreground].sum() + ce[hard_negative].sum()) / scale}


def _retinanet_resnet18(num_classes: int, **kwargs) -> nn.Module:
    from torchvision.models.detection.retinanet import RetinaNet, _default_anchorgen
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    backbone = backbone_utils.resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                                                  returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    return RetinaNet(backbone, num_classes, anchor_generator=_default_anchorgen(), **kwargs)


class TorchvisionDetector(nn.Module):
    """A torchvision detection model behind the protocol. `feature_level` names the
    backbone output used for RoI and image features ("0" = the finest FPN level)."""

    def __init__(self, num_classes: int, arch: str = "retinanet_resnet18_fpn", image_size: int = 512,
                 feature_level: str = "0", score_threshold: float = 0.05, max_detections: int = 100):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown torchvision detector {arch!r}; expected one of {ARCHITECTURES}")
        self.arch, self.num_classes, self.feature_level = arch, num_classes, feature_level
        two_stage_or_ssd = arch.startswith(("fasterrcnn", "ssd"))
        self.probs_kind = "softmax" if two_stage_or_ssd else "sigmoid"
        self.score_is_probability = not arch.startswith("fcos")
        n = num_classes + 1 if two_stage_or_ssd else num_classes
        if arch.startswith("fasterrcnn"):
            kwargs = dict(min_size=image_size, max_size=image_size, box_score_thresh=score_threshold,
                          box_detections_per_img=max_detections)
        elif arch.startswith("ssd"):
            kwargs = dict(score_thresh=score_threshold, detections_per_img=max_detections)
        else:
            kwargs = dict(min_size=image_size, max_size=image_size, score_thresh=score_threshold,
                          detections_per_img=max_detections)
        if arch == "retinanet_resnet18_fpn":
            self.model = _retinanet_resnet18(n, **kwargs)
        else:
            builder = getattr(torchvision.models.detection, arch)
            self.model = builder(weights=None, weights_backbone=None, num_classes=n, **kwargs)
        self._probs: list[torch.Tensor] = []
        self._maps: OrderedDict | None = None
        self._batch_shape: tuple[int, int] | None = None
        self._sizes: list[tuple[int, int]] = []
        if arch.startswith("fasterrcnn"):
            self._patched = (self.model.roi_heads, _roi_postprocess(self.model.roi_heads, self._probs))
        elif arch.startswith("ssd"):
            self._patched = (self.model, _ssd_postprocess(self.model, self._probs))
        else:
            self._patched = (self.model, _dense_postprocess(self.model, self._probs, arch.startswith("fcos")))
        self._patched[0].postprocess_detections = self._patched[1]
        self.model.backbone.register_forward_hook(self._keep_maps)
        self.model.transform.register_forward_hook(self._keep_sizes)
        self.feature_dim = self._feature_width()
        self.track_positives, self.positives = False, None
        self.supports_positives = positives.install(self)  # DCUS during training (not SSD)
        # Elezi et al.: flip consistency needs every anchor's prediction, Eq. 8 a loss that can
        # leave a pseudo-labelled image's background out (RetinaNet and SSD; see the README)
        self.supports_consistency = self.supports_pseudo_labels = arch.startswith(("retinanet", "ssd"))
        if self.supports_pseudo_labels:
            _install_pseudo_label_loss(self.model, arch)

    @property
    def dropout_site(self) -> nn.Module:
        """The module whose input the prediction heads read (MC dropout is applied there)."""
        return self.model.roi_heads.box_predictor if self.arch.startswith("fasterrcnn") else self.model.head

    def dense_predictions(self, images: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """RetinaNet / SSD: every anchor as a prediction, with gradients: per image, the
        decoded boxes (A, 4) in the input image's pixels and the class vectors (A, C')
        (sigmoid scores, or softmax with background last)."""
        if not self.supports_consistency:
            raise ValueError(f"{self.arch} has no dense predictions")
        image_list, _ = self.model.transform(images)
        features = self.model.backbone(image_list.tensors)
        features = list((OrderedDict([("0", features)]) if isinstance(features, torch.Tensor) else features).values())
        head_outputs = self.model.head(features)
        anchors = self.model.anchor_generator(image_list, features)
        out = []
        for i, image in enumerate(images):
            boxes = self.model.box_coder.decode_single(head_outputs["bbox_regression"][i].float(), anchors[i])
            logits = head_outputs["cls_logits"][i].float()
            probs = torch.sigmoid(logits) if self.probs_kind == "sigmoid" else _background_last(F.softmax(logits, -1))
            (h, w), (oh, ow) = image_list.image_sizes[i], image.shape[-2:]
            out.append((boxes * boxes.new_tensor([ow / w, oh / h, ow / w, oh / h]), probs))
        return out

    def _keep_maps(self, module, inputs, output):
        if not self.training:
            self._maps = output if isinstance(output, dict) else OrderedDict([("0", output)])

    def _keep_sizes(self, module, inputs, output):
        image_list = output[0]
        self._batch_shape = tuple(image_list.tensors.shape[-2:])
        self._sizes = list(image_list.image_sizes)

    def _feature_width(self) -> int:
        """Channels of the `feature_level` map: FPN backbones say it; SSD backbones are probed
        once with a blank 320 px image."""
        width = getattr(self.model.backbone, "out_channels", None)
        if isinstance(width, int):
            return width
        with probing(self.model.backbone) as backbone:
            maps = backbone(torch.zeros(1, 3, 320, 320))
        if self.feature_level not in maps:
            raise ValueError(f"feature_level {self.feature_level!r} is not a backbone output of {self.arch}; "
                             f"available: {list(maps)}")
        return maps[self.feature_level].shape[1]

    def losses(self, images, targets):
        shifted = [{**t, "labels": t["labels"] + (1 if self.probs_kind == "softmax" else 0)} for t in targets]
        return self.model(images, shifted)

    @torch.no_grad()
    def detect(self, images: list[torch.Tensor], al_outputs: bool = True) -> list[dict]:
        """`al_outputs=False`: torchvision's own postprocess, boxes, scores and labels only
        (for measuring the overhead of the AL outputs)."""
        self._probs.clear()
        owner, patched = self._patched
        if not al_outputs:
            del owner.postprocess_detections  # the class's own method
            try:
                outputs = self.model(images)
            finally:
                owner.postprocess_detections = patched
            return [{"boxes": o["boxes"], "scores": o["scores"],
                     "labels": o["labels"] - (1 if self.probs_kind == "softmax" else 0)} for o in outputs]
        outputs = self.model(images)
        if self.feature_level not in self._maps:
            raise ValueError(f"feature_level {self.feature_level!r} is not a backbone output of {self.arch}; "
                             f"available: {list(self._maps)}")
        feature_map = self._maps[self.feature_level]
        map_scale = feature_map.shape[-1] / self._batch_shape[1]
        resized = []  # kept boxes in the resized frame the backbone saw
        for i, out in enumerate(outputs):
            (h, w), (oh, ow) = self._sizes[i], images[i].shape[-2:]
            resized.append(out["boxes"] * torch.tensor([w / ow, h / oh, w / ow, h / oh], device=out["boxes"].device))
        box_features = pool_features(feature_map, resized, map_scale)
        results = []
        for i, (out, probs, feats) in enumerate(zip(outputs, self._probs, box_features)):
            h, w = self._sizes[i]
            valid = feature_map[i, :, : max(1, round(h * map_scale)), : max(1, round(w * map_scale))]
            results.append({"boxes": out["boxes"], "scores": out["scores"],
                            "labels": out["labels"] - (1 if self.probs_kind == "softmax" else 0),
                            "box_probs": probs, "box_features": feats,
                            "image_feature": valid.float().mean(dim=(1, 2))})
        return results


