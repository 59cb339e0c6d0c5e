"""Ultralytics YOLO (yolov8n, yolo11n, ... built from the package's yaml, random init) behind
the detector protocol of alb.models.detection_adapter. The optional extra `alb[yolo]`: Ultralytics
is AGPL-3.0, so using this module puts that use under the AGPL.

Only Ultralytics' model, loss and NMS are used; training runs in alb's own loop
(alb.engine.train_det) like every other detector, so the protocol (epochs, optimiser, flips,
image size) is the same for all of them. Differences from `yolo train`: no mosaic / HSV /
scale augmentation, images resized to `image_size` squared instead of letterboxed, and the
loss is the per-batch normalised loss (Ultralytics multiplies it by the batch size and
accumulates to a nominal batch of 64, which only rescales the learning rate for SGD).

Offline: Ultralytics resolves DNS at import and may download a font. `import_ultralytics()` sets
YOLO_OFFLINE=1, YOLO_AUTOINSTALL=0 and YOLO_CONFIG_DIR (under alb's cache) before the first
import, and puts matplotlib's DejaVu Sans there under the font names Ultralytics looks for.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from types import ModuleType, SimpleNamespace

import torch
from torch import nn
from torchvision.ops import clip_boxes_to_image

from alb.config import cache_root
from alb.errors import UserError
from alb.models import weights
from alb.models.roi import pool_features, probing, resize_square

ANCHOR = "anchor"  # feature_level: the kept anchor's own head-input cell (Ultralytics' get_obj_feats)
FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


def import_ultralytics() -> ModuleType:
    """Import ultralytics with every network path switched off (idempotent)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    config_dir = os.environ.setdefault("YOLO_CONFIG_DIR", str(cache_root() / "ultralytics"))
    fonts = os.path.join(os.path.expanduser(config_dir), "Ultralytics")
    if not all(os.path.isfile(os.path.join(fonts, f)) for f in FONTS):
        from matplotlib import font_manager

        os.makedirs(fonts, exist_ok=True)
        local = font_manager.findfont("DejaVu Sans", fallback_to_default=True)
        for name in FONTS:
            shutil.copyfile(local, os.path.join(fonts, name))
    try:
        with _process_state_kept():
            import ultralytics as module
            import ultralytics.utils.patches  # noqa: F401  (its patches run at import: keep them inside)
    except ImportError as err:
        raise UserError("YOLO models need the optional extra: pip install 'alb[yolo]' (in a checkout: "
                        "pip install -e '.[yolo]'; Ultralytics, AGPL-3.0)") from err
    return module


@contextmanager
def _process_state_kept():
    """Undo what importing Ultralytics does to the whole process: it sets OMP_NUM_THREADS=1
    (inherited by every later subprocess and DataLoader worker), replaces torch.save,
    PIL.Image.open (a broken image then raises ModuleNotFoundError for pi_heif instead of
    PIL's error), cv2's imread / imwrite / imshow, and numpy's and torch's print options."""
    import numpy as np
    from PIL import Image

    omp = os.environ.get("OMP_NUM_THREADS")
    saved = [(torch, "save", torch.save), (Image, "open", Image.open)]
    try:
        import cv2

        saved += [(cv2, name, getattr(cv2, name)) for name in ("imread", "imwrite", "imshow")]
    except ImportError:
        pass
    np_print = np.get_printoptions()
    try:
        yield
    finally:
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
        for owner, name, value in saved:
            setattr(owner, name, value)
        np.set_printoptions(**np_print)
        torch.set_printoptions(profile="default")


class YOLODetector(nn.Module):
    """An Ultralytics `DetectionModel` from `cfg` (a yaml name the package ships, such as
    yolov8n.yaml or yolo11n.yaml; the scale letter picks the width) with `num_classes`.

    `box_probs` are the sigmoid class scores of the anchor each kept box came from
    (`probs_kind = "sigmoid"`, and `box_probs[j, labels[j]] == scores[j]`), taken with the
    indices Ultralytics' NMS returns. `feature_level`: "anchor" (default) takes the kept
    anchor's head-input vector, channels mean-reduced to the narrowest level's width
    (Ultralytics' `get_obj_feats`), and the image feature is the mean of that vector over all
    anchors; "0" / "1" / "2" RoI-align boxes on that head input (P3 / P4 / P5) and
    average-pool it for the image feature, as the other detectors do."""

    probs_kind = "sigmoid"
    score_is_probability = True

    def __init__(self, num_classes: int, cfg: str = "yolov8n.yaml", image_size: int = 640,
                 feature_level: str = ANCHOR, score_threshold: float = 0.05, iou_threshold: float = 0.7,
                 max_detections: int = 100, box_gain: float = 7.5, cls_gain: float = 0.5, dfl_gain: float = 1.5,
                 pretrained: str | None = None, imagenet_weights: str | None = None, pretrained_strict: bool = True,
                 trainable_layers: int | None = None):
        super().__init__()
        import_ultralytics()
        from ultralytics.nn.tasks import DetectionModel

        found = weights.resolve(pretrained, imagenet_weights, f"YOLO {cfg}")

        if feature_level not in (ANCHOR, "0", "1", "2"):
            raise ValueError(f"YOLO feature_level must be 'anchor', '0', '1' or '2', got {feature_level!r}")
        self.model = DetectionModel(cfg, nc=num_classes, verbose=False)
        if found is not None:  # an Ultralytics .pt checkpoint: its matching tensors, by Ultralytics' own loader
            from ultralytics.nn.tasks import attempt_load_one_weight
            checkpoint_model, _ = attempt_load_one_weight(str(found.path))
            self.model.load(checkpoint_model, verbose=False)
        if self.model.end2end:
            raise ValueError(f"{cfg} has an end-to-end (NMS-free) head: its kept boxes carry no anchor index; "
                             "use a model with an NMS head (yolov8*, yolo11*)")
        stride = int(self.model.stride.max())
        if image_size % stride:
            raise ValueError(f"YOLO image_size must be a multiple of {stride}, got {image_size}")
        # The loss gains Ultralytics' trainer passes as `model.args` (its defaults: 7.5, 0.5, 1.5).
        self.model.args = SimpleNamespace(box=box_gain, cls=cls_gain, dfl=dfl_gain)
        self.num_classes, self.image_size, self.feature_level = num_classes, image_size, feature_level
        self.score_threshold, self.iou_threshold, self.max_detections = score_threshold, iou_threshold, max_detections
        self.feature_dim = self._feature_width()

    def _feature_width(self) -> int:
        with probing(self.model) as model:
            _, raw = model(torch.zeros(1, 3, 64, 64))
        widths = [m.shape[1] for m in raw["feats"]]
        return min(widths) if self.feature_level == ANCHOR else widths[int(self.feature_level)]

    def losses(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        x, scales = resize_square(images, self.image_size)  # RGB in [0, 1], as Ultralytics takes it
        index, labels, boxes = [], [], []
        for b, t in enumerate(targets):
            xyxy = t["boxes"].float() * scales[b].repeat(2) / self.image_size  # normalised to the input
            index.append(torch.full((len(xyxy),), b, dtype=torch.float32, device=x.device))
            labels.append(t["labels"].float().view(-1, 1))
            boxes.append(torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], dim=1))
        batch = {"batch_idx": torch.cat(index), "cls": torch.cat(labels), "bboxes": torch.cat(boxes)}
        loss, _ = self.model.loss(batch, self.model(x))
        loss = loss / len(images)  # undo Ultralytics' x batch size
        return {"box": loss[0], "cls": loss[1], "dfl": loss[2]}

    @torch.no_grad()
    def detect(self, images: list[torch.Tensor], al_outputs: bool = True) -> list[dict]:
        """`al_outputs=False`: boxes, scores and labels only (for measuring the overhead)."""
        from ultralytics.models.yolo.detect.predict import DetectionPredictor
        from ultralytics.utils.nms import non_max_suppression

        x, scales = resize_square(images, self.image_size)  # RGB in [0, 1], as Ultralytics takes it
        decoded, raw = self.model(x)  # (B, 4 + C, anchors): xywh in input pixels, sigmoid scores
        decoded = decoded.float()
        # A large per-image time budget: Ultralytics' NMS otherwise stops early on a slow machine
        # and drops the remaining images' detections, which would make runs irreproducible.
        kept, index = non_max_suppression(decoded, self.score_threshold, self.iou_threshold,
                                          max_det=self.max_detections, max_time_img=1e6, return_idxs=True)
        index = [idx.view(-1).long() for idx in index]  # kept anchors per image (an empty one comes as (0, 1))
        results, boxes_in = [], []
        for i, (det, idx) in enumerate(zip(kept, index)):
            boxes = clip_boxes_to_image(det[:, :4], (self.image_size, self.image_size))  # as Ultralytics' predictor
            boxes_in.append(boxes)
            result = {"boxes": boxes / scales[i].repeat(2), "scores": det[:, 4], "labels": det[:, 5].long()}
            if al_outputs:
                result["box_probs"] = decoded[i, 4:, idx].T
            results.append(result)
        if not al_outputs:
            return results
        maps = raw["feats"]
        if self.feature_level == ANCHOR:
            every = torch.arange(decoded.shape[-1], device=x.device)
            per_anchor = DetectionPredictor.get_obj_feats([m.float() for m in maps], [every] * len(images))
            for result, feats, idx in zip(results, per_anchor, index):
                result.update(box_features=feats[idx], image_feature=feats.mean(dim=0))
        else:
            feature_map = maps[int(self.feature_level)]
            box_features = pool_features(feature_map, boxes_in, feature_map.shape[-1] / self.image_size)
            for result, feats, image_feature in zip(results, box_features, feature_map.float().mean(dim=(2, 3))):
                result.update(box_features=feats, image_feature=image_feature)
        return results
