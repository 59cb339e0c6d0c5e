"""CenterNet (Zhou et al. 2019, "Objects as Points"): heat map + size + offset at stride 4,
written here (no maintained library ships it for torchvision backbones). The protocol it
follows is in `alb.models.detection_adapter`."""

from __future__ import annotations

import warnings

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.ops import clip_boxes_to_image

from alb.engine.difficulty import paired_iou
from alb.errors import check_choice
from alb.models import weights
from alb.models.roi import IMAGENET_MEAN, IMAGENET_STD, input_hw, pool_features, resize_square


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ModulatedDeformConv(nn.Module):
    """A 3x3 modulated deformable convolution (DCNv2, CenterNet's upsampling convolutions):
    a plain convolution predicts 2 x 9 offsets and 9 masks per position (zero-initialised, so
    it starts as a plain 3x3 convolution with mask 0.5), `torchvision.ops.deform_conv2d` does
    the sampling."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = torchvision.ops.DeformConv2d(cin, cout, 3, padding=1, bias=False)
        self.offset_mask = nn.Conv2d(cin, 27, 3, padding=1)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and self.training and torch.are_deterministic_algorithms_enabled():
            # torchvision's CUDA backward accumulates with atomic adds and does not say so to
            # torch's determinism check: say it here (once per process, Python's warning rule)
            warnings.warn("deterministic=true, but the deformable convolutions (model.neck_conv=dcn) have no "
                          "deterministic backward on CUDA: rows of one seed may differ between runs; "
                          "model.neck_conv=conv is repeatable", UserWarning, stacklevel=2)
        offset_x, offset_y, mask = self.offset_mask(x).chunk(3, dim=1)
        # float32 whatever the autocast: torchvision's CPU kernel has no bfloat16 version
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.conv(x.float(), torch.cat([offset_x, offset_y], dim=1).float(), torch.sigmoid(mask.float()))


NECK_CONVS = ("conv", "dcn")


def _upsample_stage(cin: int, cout: int, kind: str) -> nn.Sequential:
    """One neck stage: a 3x3 convolution (plain, or deformable as CenterNet's ResNet-DCN
    models), BatchNorm, ReLU, then a 2x transposed convolution, BatchNorm, ReLU."""
    first = (_conv(cin, cout) if kind == "conv" else
             nn.Sequential(ModulatedDeformConv(cin, cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)))
    return nn.Sequential(first, nn.ConvTranspose2d(cout, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


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
    """A torchvision ResNet without its pooling and classifier (stride 32), with torchvision's
    module names (conv1, bn1, layer1..layer4), so a ResNet state dict loads into it by key.
    `weights`: a torchvision weights enum (ImageNet), loaded by torchvision."""

    def __init__(self, depth: int = 18, weights=None):
        super().__init__()
        net = getattr(torchvision.models, f"resnet{depth}")(weights=weights)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = net.fc.in_features
        expansion = self.out_channels // 512
        self.skip_channels = {16: 256 * expansion, 8: 128 * expansion, 4: 64 * expansion}

    def forward(self, x):
        """-> the stride-32 map and {stride: map} for strides 4, 8, 16."""
        x, skips = self.maxpool(self.relu(self.bn1(self.conv1(x)))), {}
        for stride, layer in zip((4, 8, 16, 32), (self.layer1, self.layer2, self.layer3, self.layer4)):
            x = layer(x)
            skips[stride] = x
        return x, skips


def letterbox(images: list[torch.Tensor], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each (3, H, W) image resized by one scale to fit (height, width) and centred on a zero
    canvas, stacked; and its (s, s, tx, ty) frame (`to_input`)."""
    height, width = size
    batch = images[0].new_zeros((len(images), 3, height, width))
    frames = []
    for k, im in enumerate(images):
        h, w = im.shape[-2:]
        scale = min(height / h, width / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        top, left = (height - nh) // 2, (width - nw) // 2
        batch[k, :, top:top + nh, left:left + nw] = F.interpolate(im[None], size=(nh, nw), mode="bilinear",
                                                                  align_corners=False)[0]
        frames.append([nw / w, nh / h, float(left), float(top)])
    return batch, torch.tensor(frames, device=batch.device)


def to_input(boxes: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """xyxy boxes of an image in the network's input frame (sx, sy, tx, ty)."""
    return boxes * frame[:2].repeat(2) + frame[2:].repeat(2)


def from_input(boxes: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """The inverse of `to_input`."""
    return (boxes - frame[2:].repeat(2)) / frame[:2].repeat(2)


class CenterNet(nn.Module):
    """CenterNet with a plain-conv upsampling neck (3 x [conv, 2x transposed conv]) on a
    ResNet or tiny backbone, optionally with skip connections from the backbone. Its intermediate maps are f1 (backbone output, stride 32), f2,
    f3 and f4 (neck stages, strides 16, 8, 4; the heads read f4), NORIS supp. Sec. 5.

    `image_size`: an int (resized to a square, CenterNet's 512 x 512 Pascal input) or
    [width, height] (CenterNet's KITTI input, 1280 x 384; both multiples of 32).
    `pretrained` (null | imagenet | a path, `alb.models.weights`): a pretrained ResNet
    backbone has its top `trainable_layers` stages trainable and, with `frozen_batchnorm`,
    frozen BatchNorm (CenterNet's own code trains all of it: 5 and false in its yaml).

    `neck_conv=dcn`: the neck's 3x3 convolutions are modulated deformable ones (CenterNet's
    ResNet-DCN models; `torchvision.ops.deform_conv2d`); `keep_aspect`: images keep their
    aspect ratio, centred on a black canvas of the input size (CenterNet's affine input).

    Differences from the paper's detector: the heat-map splat is an axis-aligned Gaussian with
    sigma = 0.54 * size / 6 (TTFNet) instead of CornerNet's radius rule; the transposed
    convolutions start from PyTorch's initialisation, not CenterNet's bilinear one.
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

    def __init__(self, num_classes: int, backbone: str = "resnet18", image_size: int | list[int] = 512,
                 neck_channels: tuple[int, int, int] = (256, 128, 64), head_channels: int = 64,
                 feature_level: str = "f4", score_threshold: float = 0.05, max_detections: int = 100,
                 tiny_width: int = 16, size_weight: float = 0.1, skip_connections: bool = False,
                 pretrained: str | None = None, imagenet_weights: str | None = None, pretrained_strict: bool = True,
                 trainable_layers: int = 3, frozen_batchnorm: bool = True, neck_conv: str = "conv",
                 keep_aspect: bool = False):
        super().__init__()
        check_choice("CenterNet neck_conv", neck_conv, NECK_CONVS)
        self.keep_aspect = bool(keep_aspect)
        if feature_level not in ("f1", "f2", "f3", "f4"):
            raise ValueError(f"CenterNet feature_level must be f1..f4, got {feature_level!r}")
        self.num_classes, self.feature_level = num_classes, feature_level
        self.input_hw = input_hw(image_size)
        self.image_size = image_size
        self.score_threshold, self.max_detections, self.size_weight = score_threshold, max_detections, size_weight
        found = weights.resolve(pretrained, imagenet_weights if backbone != "tiny" else None, f"CenterNet {backbone}")
        if backbone == "tiny":
            self.backbone = TinyBackbone(tiny_width)
        else:
            enum = weights.torchvision_weights(found.enum) if found is not None and found.enum else None
            self.backbone = ResNetBackbone(int(backbone.removeprefix("resnet")), enum)
            if found is not None:
                weights.freeze_resnet(self.backbone, trainable_layers, frozen_batchnorm)
        cin, stages = self.backbone.out_channels, []
        for cout in neck_channels:
            stages.append(_upsample_stage(cin, cout, neck_conv))
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
        if found is not None and found.enum is None:  # a local file: the whole model or its backbone
            weights.load_matching(found, {"whole model": self, "backbone": self.backbone}, pretrained_strict)

    @property
    def feature_dim(self) -> int:
        return self.channels[self.feature_level]

    def _batch(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Resize to the input size and normalise; also each image's (sx, sy, tx, ty): a box of
        the image maps into the input as x * sx + tx, y * sy + ty (`to_input`). `keep_aspect`:
        one scale for both sides and the image centred on a zero (black) canvas, as CenterNet's
        affine input; otherwise squashed to the input size (t = 0)."""
        if self.keep_aspect:
            batch, frames = letterbox(images, self.input_hw)
        else:
            batch, scales = resize_square(images, self.input_hw)
            frames = torch.cat([scales, torch.zeros_like(scales)], dim=1)
        return (batch - self.mean) / self.std, frames

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

    def _targets(self, targets: list[dict], scales: torch.Tensor, out_h: int, out_w: int):
        """Heat map (B, C, out_h, out_w), and per object: batch index, flat centre index, size
        and offset targets (in output-stride units)."""
        device = scales.device
        heat = torch.zeros(len(targets), self.num_classes, out_h, out_w, device=device)
        grid_x = torch.arange(out_w, device=device, dtype=torch.float32)
        grid_y = torch.arange(out_h, device=device, dtype=torch.float32)
        limit = torch.tensor([out_w, out_h, out_w, out_h], device=device, dtype=torch.float32) - 1e-3
        index, flat, size, offset, classes = [], [], [], [], []
        for b, t in enumerate(targets):
            boxes = to_input(t["boxes"].to(device).float(), scales[b]) / self.stride
            boxes = torch.minimum(boxes.clamp(min=0), limit)
            for box, label in zip(boxes, t["labels"].tolist()):
                w, h = (box[2] - box[0]).item(), (box[3] - box[1]).item()
                if w <= 0 or h <= 0:
                    continue
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                ix, iy = int(cx), int(cy)
                sx, sy = max(0.54 * w / 6, 0.3), max(0.54 * h / 6, 0.3)
                g = torch.exp(-((grid_x - ix) ** 2)[None, :] / (2 * sx ** 2) - ((grid_y - iy) ** 2)[:, None] / (2 * sy ** 2))
                heat[b, label] = torch.maximum(heat[b, label], g)
                index.append(b)
                flat.append(iy * out_w + ix)
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
        heat_t, index, flat, size_t, offset_t, classes = self._targets(targets, scales, *heat_logits.shape[-2:])
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
        out = p.shape[-1]  # the row length of the flat index
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
            boxes = from_input(torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1), scales[i])
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
            boxes_in = clip_boxes_to_image(boxes_in, self.input_hw)
            boxes_in_all.append(boxes_in)
            result = {"boxes": clip_boxes_to_image(from_input(boxes_in, scales[i]), tuple(images[i].shape[-2:])),
                      "scores": s, "labels": labels}
            if al_outputs:
                result["box_probs"] = heat[i].flatten(1)[:, pos].T  # (k, C): the peak's class vector
            results.append(result)
        if al_outputs:
            box_features = pool_features(feature_map, boxes_in_all, feature_map.shape[-1] / self.input_hw[1])
            image_features = feature_map.float().mean(dim=(2, 3))
            for result, feats, image_feature in zip(results, box_features, image_features):
                result.update(box_features=feats, image_feature=image_feature)
        return results
