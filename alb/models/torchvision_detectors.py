"""torchvision's detectors behind the protocol of `alb.models.detection_adapter`, with
`postprocess_detections` replaced on the instance by a copy that carries the candidate index
through top-k and NMS (so each kept box's class vector is the one it came from), dense
predictions for flip-consistency training and Elezi's Eq. 8 loss for pseudo-labels."""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.models.detection import backbone_utils
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from alb.errors import check_choice, UserError
from alb.models import positives, weights
from alb.models.roi import pool_features, probing


def _dense_postprocess(head, sink: list, centerness: bool, level_sink: list | None = None):
    """RetinaNet / FCOS `postprocess_detections` that also records, per kept box, the
    sigmoid class vector of the anchor it came from (and, in `level_sink`, its pyramid level);
    torchvision's logic otherwise."""

    def postprocess(head_outputs, anchors, image_shapes):
        detections = []
        for index, image_shape in enumerate(image_shapes):
            boxes_all, scores_all, labels_all, probs_all, levels_all = [], [], [], [], []
            levels = zip(head_outputs["bbox_regression"], head_outputs["cls_logits"], anchors[index],
                         head_outputs["bbox_ctrness"] if centerness else head_outputs["cls_logits"])
            for level, (regression, logits, level_anchors, ctr) in enumerate(levels):
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
                levels_all.append(torch.full_like(candidates, level))
            boxes, scores = torch.cat(boxes_all), torch.cat(scores_all)
            labels, probs = torch.cat(labels_all), torch.cat(probs_all)
            keep = batched_nms(boxes, scores, labels, head.nms_thresh)[: head.detections_per_img]
            detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
            sink.append(probs[keep])
            if level_sink is not None:
                level_sink.append(torch.cat(levels_all)[keep])
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


def _install_pseudo_label_loss(detector: "TorchvisionDetector") -> None:
    """Elezi Eq. 8 on the instance: anchors of a pseudo-labelled image that match no
    pseudo-label are not trained as background. SSD also leaves each image's own loss on the
    detector while `track_image_losses` (learning loss). Batches without a pseudo-labelled
    image, and without that tracking, go through torchvision's own loss unchanged."""
    model, arch = detector.model, detector.arch
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
        if not any(pseudo) and not detector.track_image_losses:
            return original(targets, head_outputs, anchors, matched_idxs)
        losses, per_image = ssd_loss(model, targets, head_outputs, anchors, matched_idxs, pseudo, per_image=True)
        if detector.track_image_losses:
            detector.image_losses = per_image.detach()
        return losses

    model.compute_loss = ssd_compute_loss


def ssd_loss(model, targets, head_outputs, anchors, matched_idxs, pseudo, per_image: bool = False):
    """SSD's MultiBox loss (smooth L1 on matched anchors, cross-entropy on them and on the
    hardest `neg_to_pos_ratio` x positives background anchors) with no hard negatives taken
    from a pseudo-labelled image: Eq. 8. `per_image`: also each image's loss on its own,
    normalised by its own positives, (B,)."""
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
    losses = {"bbox_regression": torch.stack(box_losses).sum() / scale,
              "classification": (ce[is_foreground].sum() + ce[hard_negative].sum()) / scale}
    if not per_image:
        return losses
    own = (torch.stack(box_losses) + (ce * (is_foreground | hard_negative)).sum(1)) / is_foreground.sum(1).clamp(min=1)
    return losses, own


P6_SOURCES = ("p5", "c5")
BOX_FEATURE_SOURCES = ("roi", "tower")


def tower_features(tower: list[torch.Tensor], image: int, boxes: torch.Tensor, levels: torch.Tensor,
                   batch_shape: tuple[int, int]) -> torch.Tensor:
    """PPAL's object features (its `get_inter_feats`): each box's classification-tower feature
    (levels' maps (B, C, H_l, W_l)) sampled bilinearly at the box's centre on the box's own
    pyramid level; boxes (k, 4) in the resized frame of a batch padded to `batch_shape`."""
    out = boxes.new_zeros((len(boxes), tower[0].shape[1]))
    height, width = batch_shape
    centre = torch.stack([(boxes[:, 0] + boxes[:, 2]) / width - 1, (boxes[:, 1] + boxes[:, 3]) / height - 1], dim=1)
    for level in levels.unique().tolist():
        mine = levels == level
        grid = centre[mine][None, None].to(tower[level].dtype)  # (1, 1, n, 2) in [-1, 1]
        sampled = F.grid_sample(tower[level][image:image + 1], grid, mode="bilinear", align_corners=False)
        out[mine] = sampled[0, :, 0].T.to(out.dtype)  # (n, C)
    return out
# ImageNet's statistics on [0, 1] input: what torchvision's VGG16_Weights.IMAGENET1K_V1 expects
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# ssd.pytorch's `vgg` list (vgg16_reducedfc.pth) -> torchvision's SSD300 backbone: conv1_1 .. conv4_3
# keep their indices; conv5_1..3, conv6 (fc6 reduced) and conv7 (fc7 reduced) sit in extra.0
SSD_PYTORCH_VGG = {**{str(i): f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)},
                   "24": "extra.0.1", "26": "extra.0.3", "28": "extra.0.5", "31": "extra.0.7.1", "33": "extra.0.7.3"}


def reduced_fc(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The SSD paper's reduced fc from a full VGG-16 state dict (torchvision's keys): fc6
    (4096, 25088) seen as (4096, 512, 7, 7), every 4th filter and every 3rd tap -> the dilated
    3x3 conv6 (1024, 512, 3, 3); fc7 (4096, 4096) every 4th row and column -> the 1x1 conv7
    (1024, 1024, 1, 1); biases every 4th. Keyed as torchvision's SSD300 backbone."""
    fc6, fc7 = state["classifier.0.weight"], state["classifier.3.weight"]
    if fc6.shape != (4096, 25088) or fc7.shape != (4096, 4096) or not torch.isfinite(fc6[:4]).all():
        raise UserError("the VGG-16 weights hold no usable fc6 / fc7 (VGG16_Weights.IMAGENET1K_FEATURES has only the "
                        "convolutions: use VGG16_Weights.IMAGENET1K_V1 for the reduced fc)")
    return {"extra.0.7.1.weight": fc6.reshape(4096, 512, 7, 7)[::4, :, ::3, ::3].contiguous(),
            "extra.0.7.1.bias": state["classifier.0.bias"][::4].contiguous(),
            "extra.0.7.3.weight": fc7[::4, ::4].contiguous().reshape(1024, 1024, 1, 1),
            "extra.0.7.3.bias": state["classifier.3.bias"][::4].contiguous()}


def from_ssd_pytorch(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """ssd.pytorch's `vgg16_reducedfc.pth` (keys "0.weight" .. "33.bias") as torchvision's SSD300
    backbone keys; None when `state` is not such a file. conv1_1's input channels are reversed:
    ssd.pytorch reads BGR images, torchvision's transform hands RGB (its own port of these
    weights, VGG16_Weights.IMAGENET1K_FEATURES, is RGB with the mean in RGB order)."""
    names = {k.rsplit(".", 1)[0] for k in state}
    if not names or not names <= set(SSD_PYTORCH_VGG):
        return None
    out = {}
    for key, value in state.items():
        index, kind = key.rsplit(".", 1)
        out[f"{SSD_PYTORCH_VGG[index]}.{kind}"] = value.flip(1) if key == "0.weight" else value
    return out


def _retinanet(depth: int, num_classes: int, weights_backbone=None, trainable_backbone_layers: int | None = None,
               p6_from: str = "p5", **kwargs) -> nn.Module:
    """RetinaNet on a ResNet-`depth`-FPN, assembled as torchvision's `retinanet_resnet50_fpn`
    is (torchvision ships no R18 builder, and its R50 builder takes P6 from P5): frozen
    BatchNorm and `trainable_backbone_layers` stages when the backbone is pretrained, plain
    BatchNorm and all stages otherwise. `p6_from="c5"`: P6 is a stride-2 convolution of C5,
    MMDetection's `add_extra_convs='on_input'` (PPAL's and MMDetection's RetinaNet configs);
    "p5": of P5, torchvision's v1 RetinaNet."""
    from torchvision.models.detection.retinanet import RetinaNet, _default_anchorgen
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    check_choice("model.p6_from", p6_from, P6_SOURCES)
    trained = weights_backbone is not None
    c5 = 512 if depth < 50 else 2048
    backbone = backbone_utils.resnet_fpn_backbone(
        backbone_name=f"resnet{depth}", weights=weights_backbone,
        norm_layer=FrozenBatchNorm2d if trained else nn.BatchNorm2d,
        trainable_layers=trainable_backbone_layers if trained else 5, returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(c5 if p6_from == "c5" else 256, 256))
    return RetinaNet(backbone, num_classes, anchor_generator=_default_anchorgen(), **kwargs)


def _focal_loss(head, gamma: float, alpha: float = 0.25):
    """RetinaNet's classification loss with focal `gamma` (torchvision's head fixes 2.0; PPAL's
    VOC config uses 1.5): per image, the sigmoid focal loss summed over the anchors that are
    not ignored, over the image's foreground count; the batch's mean of that."""
    from torchvision.ops import sigmoid_focal_loss

    def compute_loss(targets, head_outputs, matched_idxs):
        per_image = []
        for target, logits, matched in zip(targets, head_outputs["cls_logits"], matched_idxs):
            foreground = matched >= 0
            wanted = torch.zeros_like(logits)
            wanted[foreground, target["labels"][matched[foreground]]] = 1.0
            counted = matched != head.BETWEEN_THRESHOLDS
            per_image.append(sigmoid_focal_loss(logits[counted], wanted[counted], alpha=alpha, gamma=gamma,
                                                reduction="sum") / max(1, int(foreground.sum())))
        return sum(per_image) / len(targets)

    return compute_loss


class TorchvisionDetector(nn.Module):
    """A torchvision detection model behind the protocol. `feature_level` names the
    backbone output used for RoI and image features ("0" = the finest FPN level).

    `min_size` / `max_size`: torchvision's resize (shorter side to `min_size`, longer side at
    most `max_size`; MMDetection's (1000, 600) is min_size=600 max_size=1000); `image_size`,
    when set, is both (a square cap) and wins over them. SSD models resize to their fixed
    300 / 320.

    `pretrained` (null | imagenet | a path, `alb.models.weights`): `imagenet` goes through
    torchvision's builder (`weights_backbone` = the `imagenet_weights` enum,
    `trainable_backbone_layers` = `trainable_layers`: frozen BatchNorm and stem, as
    torchvision's references train); a path loads a whole model's state dict (alb's or
    torchvision's keys) or a backbone's, into a backbone with frozen BatchNorm and, on
    ResNets, the same frozen stages."""

    @staticmethod
    def fixed_input(model_node) -> bool:
        """Whether every batch reaches the network at one size (`alb.machine.fixed_input`):
        SSD resizes to its own size; the others' keep-ratio resize (min_size / max_size) gives
        a new shape every batch."""
        return fixed_input_size(model_node) is not None

    def __init__(self, num_classes: int, arch: str = "retinanet_resnet18_fpn", image_size: int | None = None,
                 feature_level: str = "0", score_threshold: float = 0.05, max_detections: int = 100,
                 min_size: int | None = None, max_size: int | None = None, pretrained: str | None = None,
                 imagenet_weights: str | None = None, pretrained_strict: bool = True, trainable_layers: int = 3,
                 eval_score_threshold: float | None = None, eval_per_class: int | None = None,
                 eval_nms_threshold: float | None = None, eval_candidates: int | None = None,
                 focal_gamma: float = 2.0, p6_from: str = "p5", default_box_scales: list[float] | None = None,
                 box_features: str = "roi"):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown torchvision detector {arch!r}; expected one of {ARCHITECTURES}")
        found = weights.resolve(pretrained, imagenet_weights, arch)
        enum = weights.torchvision_weights(found.enum) if found is not None and found.enum else None
        if image_size is not None:
            min_size = max_size = image_size
        min_size, max_size = int(min_size or 512), int(max_size or 512)
        self.arch, self.num_classes, self.feature_level = arch, num_classes, feature_level
        two_stage_or_ssd = arch.startswith(("fasterrcnn", "ssd"))
        self.probs_kind = "softmax" if two_stage_or_ssd else "sigmoid"
        self.score_is_probability = not arch.startswith("fcos")
        n = num_classes + 1 if two_stage_or_ssd else num_classes
        if arch.startswith("fasterrcnn"):
            kwargs = dict(min_size=min_size, max_size=max_size, box_score_thresh=score_threshold,
                          box_detections_per_img=max_detections)
        elif arch.startswith("ssd"):
            kwargs = dict(score_thresh=score_threshold, detections_per_img=max_detections)
            if enum is not None and found.enum == "VGG16_Weights.IMAGENET1K_V1":  # its own input statistics
                kwargs.update(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
        else:
            kwargs = dict(min_size=min_size, max_size=max_size, score_thresh=score_threshold,
                          detections_per_img=max_detections)
        kwargs.update(weights_backbone=enum, trainable_backbone_layers=int(trainable_layers) if enum else None)
        if not arch.startswith("retinanet") and (p6_from != "p5" or focal_gamma != 2.0):
            raise UserError(f"model.p6_from and model.focal_gamma are RetinaNet settings; {arch} has no P6 / focal loss")
        if arch == "retinanet_resnet18_fpn" or (arch == "retinanet_resnet50_fpn" and p6_from != "p5"):
            self.model = _retinanet(18 if arch == "retinanet_resnet18_fpn" else 50, n, p6_from=p6_from, **kwargs)
        else:
            builder = getattr(torchvision.models.detection, arch)
            self.model = builder(weights=None, num_classes=n, **kwargs)
        if default_box_scales is not None:
            if arch != "ssd300_vgg16" or len(default_box_scales) != 7:
                raise UserError("model.default_box_scales: 7 scales (6 feature maps + the last max size) for "
                                f"ssd300_vgg16, got {list(default_box_scales)} for {arch}")
            from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
            old_boxes = self.model.anchor_generator  # the same aspect ratios and steps, other scales
            self.model.anchor_generator = DefaultBoxGenerator(old_boxes.aspect_ratios,
                                                              scales=[float(v) for v in default_box_scales],
                                                              steps=old_boxes.steps, clip=old_boxes.clip)
        if arch == "ssd300_vgg16" and found is not None and found.enum == "VGG16_Weights.IMAGENET1K_V1":
            self.model.backbone.load_state_dict(reduced_fc(weights.read_state_dict(found)), strict=False)
        if arch.startswith("retinanet") and focal_gamma != 2.0:
            classification = self.model.head.classification_head
            classification.compute_loss = _focal_loss(classification, float(focal_gamma))
        if found is not None and enum is None:
            self._load_file(found, trainable_layers, pretrained_strict)
        self.eval_score_threshold, self.eval_per_class = eval_score_threshold, eval_per_class
        self.eval_nms_threshold, self.eval_candidates = eval_nms_threshold, eval_candidates
        self._probs: list[torch.Tensor] = []
        self._levels: list[torch.Tensor] = []  # dense heads: each kept box's pyramid level
        check_choice("model.box_features", box_features, BOX_FEATURE_SOURCES)
        if box_features == "tower" and not arch.startswith("retinanet"):
            raise UserError(f"model.box_features=tower is RetinaNet's classification tower; {arch} has none")
        self.box_feature_source = box_features
        self._tower: list[torch.Tensor] = []
        if box_features == "tower":  # the classification tower's output, one map per level, in order
            self.model.head.classification_head.conv.register_forward_hook(self._keep_tower)
        self._maps: OrderedDict | None = None
        self._batch_shape: tuple[int, int] | None = None
        self._sizes: list[tuple[int, int]] = []
        if arch.startswith("fasterrcnn"):
            self._patched = (self.model.roi_heads, _roi_postprocess(self.model.roi_heads, self._probs))
        elif arch.startswith("ssd"):
            self._patched = (self.model, _ssd_postprocess(self.model, self._probs))
        else:
            self._patched = (self.model, _dense_postprocess(self.model, self._probs, arch.startswith("fcos"),
                                                            self._levels))
        self._patched[0].postprocess_detections = self._patched[1]
        self.track_image_losses, self.image_losses, self.level_maps = False, None, None
        self.model.backbone.register_forward_hook(self._keep_maps)
        self.model.transform.register_forward_hook(self._keep_sizes)
        self.feature_dim = self._feature_width()
        self.track_positives, self.positives = False, None
        self.supports_positives = positives.install(self)  # DCUS during training (not SSD)
        # Elezi et al.: flip consistency needs every anchor's prediction, Eq. 8 a loss that can
        # leave a pseudo-labelled image's background out (RetinaNet and SSD; see docs/detectors.md)
        self.supports_consistency = self.supports_pseudo_labels = arch.startswith(("retinanet", "ssd"))
        # learning loss (Yoo & Kweon's detection form, on SSD): per-image losses + the backbone's maps
        self.supports_loss_prediction = arch.startswith("ssd")
        if self.supports_pseudo_labels:
            _install_pseudo_label_loss(self)

    @contextmanager
    def evaluation_thresholds(self):
        """The test-split metric's thresholds for the block, when the yaml sets them apart from
        the AL outputs' (ssd.pytorch evaluates SSD300 at score 0.01 with up to 200 boxes per
        class after NMS: `eval_score_threshold: 0.01`, `eval_per_class: 200`)."""
        owner = self.model.roi_heads if self.arch.startswith("fasterrcnn") else self.model
        saved = {k: getattr(owner, k) for k in ("score_thresh", "detections_per_img", "topk_candidates", "nms_thresh")
                 if hasattr(owner, k)}
        try:
            if self.eval_score_threshold is not None:
                owner.score_thresh = float(self.eval_score_threshold)
            if self.eval_per_class is not None:
                if hasattr(owner, "topk_candidates"):  # per class before NMS (SSD), per level (dense heads)
                    owner.topk_candidates = int(self.eval_per_class)
                owner.detections_per_img = int(self.eval_per_class) * self.num_classes
            if self.eval_nms_threshold is not None:  # PPAL's VOC test config: NMS IoU 0.4
                owner.nms_thresh = float(self.eval_nms_threshold)
            if self.eval_candidates is not None and hasattr(owner, "topk_candidates"):  # MMDetection's nms_pre
                owner.topk_candidates = int(self.eval_candidates)
            yield
        finally:
            for key, value in saved.items():
                setattr(owner, key, value)

    def _load_file(self, found, trainable_layers: int, strict: bool) -> None:
        """A local state dict: the backbone gets the pretrained treatment first (frozen
        BatchNorm; on ResNet bodies the frozen stages), then the file is matched by key to
        this wrapper, the torchvision model, or the backbone's body."""
        body = getattr(self.model.backbone, "body", self.model.backbone)
        if self.arch == "ssd300_vgg16":
            mapped = from_ssd_pytorch(weights.read_state_dict(found))
            if mapped is not None:  # ssd.pytorch's vgg16_reducedfc.pth: every VGG layer, fc6 / fc7 reduced
                own = body.state_dict()
                wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in mapped.items()
                         if own[k].shape != v.shape]
                if wrong:
                    raise UserError(f"model.pretrained: {found.path.name} reads as ssd.pytorch's VGG list but its "
                                    f"shapes differ from SSD300's (file vs model): {', '.join(wrong[:5])}")
                body.load_state_dict(mapped, strict=False)  # L2Norm's scale and the extra layers stay as built
                return
        if all(hasattr(body, name) for name in weights.RESNET_STAGES):
            weights.freeze_resnet(body, trainable_layers)
        else:
            weights.frozen_batchnorm(body)
        weights.load_matching(found, {"whole model": self, "torchvision model": self.model, "backbone": body}, strict)

    @property
    def dropout_site(self) -> nn.Module:
        """The module whose input the prediction heads read (MC dropout is applied there)."""
        return self.model.roi_heads.box_predictor if self.arch.startswith("fasterrcnn") else self.model.head

    def dense_predictions(self, images: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """RetinaNet / SSD: every anchor as a prediction, with gradients: per image, the
        decoded boxes (A, 4) in the input image's pixels, the class vectors (A, C') (sigmoid
        scores, or softmax with background last) and the encoded offsets (A, 4): the
        regression output, (dx, dy, dw, dh) over the box coder's weights (SSD's variances)."""
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
            encoded = head_outputs["bbox_regression"][i].float()
            out.append((boxes * boxes.new_tensor([ow / w, oh / h, ow / w, oh / h]), probs, encoded))
        return out

    def _keep_maps(self, module, inputs, output):
        if not self.training:
            self._maps = output if isinstance(output, dict) else OrderedDict([("0", output)])
        elif self.track_image_losses:
            self.level_maps = list(output.values()) if isinstance(output, dict) else [output]

    @property
    def level_channels(self) -> list[int]:
        """Channels of every backbone map (SSD: six levels), the learning-loss module's input."""
        if not self.supports_loss_prediction:
            raise ValueError(f"{self.arch} has no learning-loss levels")
        with probing(self.model.backbone) as backbone:
            maps = backbone(torch.zeros(1, 3, 300, 300, device=next(self.parameters()).device))
        return [m.shape[1] for m in maps.values()]

    def feature_levels(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every backbone map of a batch (for the learning-loss module at prediction)."""
        image_list, _ = self.model.transform(images)
        maps = self.model.backbone(image_list.tensors)
        return list(maps.values()) if isinstance(maps, dict) else [maps]

    def _keep_tower(self, module, inputs, output):
        if not self.training:
            self._tower.append(output)

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
        self._levels.clear()
        self._tower.clear()
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
        if self.box_feature_source == "tower":
            box_features = [tower_features(self._tower, i, boxes, levels, self._batch_shape)
                            for i, (boxes, levels) in enumerate(zip(resized, self._levels))]
        else:
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
