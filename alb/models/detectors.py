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

CenterNet is written here (`alb/models/centernet.py`: no maintained library ships it for
torchvision backbones); the torchvision detectors are torchvision's own
(`alb/models/torchvision_detectors.py`), with `postprocess_detections` replaced on the
instance by a copy that carries the candidate index through top-k and NMS, so the class
vector of each kept box is the one it came from. Boxes, scores and labels are unchanged.
Shared helpers are in `alb/models/roi.py`. This module names them all (configs'
`_target_: alb.models.detectors.CenterNet` keep working).

Optional, for the methods that change training (issue 10): `dense_predictions(images)` (every
candidate's box and class vector, with gradients: flip-consistency SSL), a `pseudo` flag in a
target (Elezi's Eq. 8), `dropout_site` (MC dropout), per-image losses and `feature_levels`
(learning loss); `supports_*` attributes say which a detector has.
"""

from alb.models.centernet import CenterNet, ResNetBackbone, TinyBackbone
from alb.models.roi import IMAGENET_MEAN, IMAGENET_STD, pool_features, probing, resize_square
from alb.models.torchvision_detectors import (ARCHITECTURES, FIXED_INPUT_SIZE, TorchvisionDetector, _ssd_loss,
                                              fixed_input_size)

__all__ = ["ARCHITECTURES", "FIXED_INPUT_SIZE", "IMAGENET_MEAN", "IMAGENET_STD", "CenterNet", "ResNetBackbone",
           "TinyBackbone", "TorchvisionDetector", "_ssd_loss", "fixed_input_size", "pool_features", "probing",
           "resize_square"]
