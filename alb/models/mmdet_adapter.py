"""Any MMDetection 3.x detector config behind the detector protocol of
alb.models.detection_adapter (optional: `bash scripts/install_mmdet.sh` builds mmcv and installs
mmdet). `pretrained=null`: random initialisation, every `init_cfg` that loads a checkpoint
is dropped; `imagenet`: the config's own `init_cfg` checkpoint is kept (`torchvision://resnet50`
resolves through the same torch hub cache, checked first by `alb.models.weights`); a path: a
whole model's (or backbone's) state dict loaded after initialisation, as `load_from` does.

MMDetection's model, losses and post-processing are used as they are; training runs in
alb's loop (alb.engine.train_det) like every other detector, and images are resized to
`image_size` squared instead of the config's test pipeline (keep-ratio resize to
1333 x 800), so the protocol is the same for all models.

Class vectors. MMDetection's heads keep no candidate index through NMS, so while `detect`
runs, two of its functions are wrapped (and restored afterwards):
- dense heads (RetinaNet, ATSS, FCOS, DDOD, GFL, SSD, ...): `filter_scores_and_topk`, which
  picks each level's candidates, also records their full score vectors; the head's
  `_bbox_post_process` attaches them to the candidates as a field, and MMDetection's own
  NMS, size filter and top-k index that field with the boxes;
- two-stage heads (`BBoxHead`: Faster R-CNN, Cascade's last stage, ...): `multiclass_nms`
  runs with `return_inds=True` and each kept box gets the softmax of its proposal.
A head whose post-processing goes another way is refused with a clear error.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from alb.errors import UserError
from alb.models import weights
from alb.models.roi import pool_features, probing, resize_square


def _mmdet():
    try:
        import mmdet  # noqa: F401
        from mmdet.utils import register_all_modules
    except ImportError as err:
        raise UserError("MMDetection models need mmdet and a compiled mmcv: bash scripts/install_mmdet.sh") from err
    register_all_modules()
    from mmengine.logging import MMLogger

    MMLogger.get_current_instance().setLevel(logging.WARNING)  # not a line per initialised weight


def config_path(config: str) -> Path:
    """A config file, or a path relative to the configs MMDetection's wheel ships
    (`atss/atss_r50_fpn_1x_coco.py`)."""
    path = Path(config).expanduser()
    if path.is_file():
        return path
    import mmdet

    shipped = Path(mmdet.__file__).parent / ".mim" / "configs" / config
    if shipped.is_file():
        return shipped
    raise UserError(f"MMDetection config {config!r}: neither a file nor one of mmdet's shipped configs "
                    f"({shipped.parent.parent})")


def _random_init(node, num_classes: int, under_rpn: bool = False, keep_checkpoints: bool = False):
    """Recursively: drop checkpoint `init_cfg`s (unless `keep_checkpoints`), set every
    `num_classes` (not the RPN's)."""
    if isinstance(node, dict):
        for key in list(node):
            value = node[key]
            if key == "init_cfg" and not keep_checkpoints and (value is None or "checkpoint" in str(value)
                                                               or "Pretrained" in str(value)):
                node[key] = None
            elif key == "num_classes" and not under_rpn:
                node[key] = num_classes
            else:
                _random_init(value, num_classes, under_rpn or key == "rpn_head", keep_checkpoints)
    elif isinstance(node, list):
        for item in node:
            _random_init(item, num_classes, under_rpn, keep_checkpoints)


_HOLDERS: dict = {}


def _holders(function) -> list:
    """(module, name) of every mmdet.models module that imported `function`; scanned once
    (register_all_modules has imported them all), since a scan costs ~9 ms per call."""
    if function not in _HOLDERS:
        _HOLDERS[function] = [(module, name) for module in list(sys.modules.values())
                              if getattr(module, "__name__", "").startswith("mmdet.models")
                              for name, value in list(vars(module).items()) if value is function]
    return _HOLDERS[function]


class MMDetDetector(nn.Module):
    """An MMDetection detector from `config` with `num_classes`. `feature_level` is the
    index of the neck output (or backbone output, without a neck) for RoI and image
    features. `score_threshold` / `max_detections` override the config's test_cfg."""

    def __init__(self, num_classes: int, config: str = "retinanet/retinanet_r18_fpn_1x_coco.py",
                 image_size: int = 512, feature_level: int = 0, score_threshold: float = 0.05,
                 max_detections: int = 100, pretrained: str | None = None, imagenet_weights: str | None = None,
                 pretrained_strict: bool = True, trainable_layers: int | None = None):
        super().__init__()
        _mmdet()
        from mmdet.registry import MODELS
        from mmengine.config import Config, ConfigDict

        found = weights.resolve(pretrained, imagenet_weights, f"MMDetection {config}")
        cfg = Config.fromfile(str(config_path(config)))
        model_cfg = cfg.model.to_dict()
        _random_init(model_cfg, num_classes, keep_checkpoints=found is not None and found.enum is not None)
        if trainable_layers is not None and "frozen_stages" in model_cfg.get("backbone", {}):
            model_cfg["backbone"]["frozen_stages"] = 4 - int(trainable_layers)  # mmdet counts frozen ResNet stages
        test_cfg = model_cfg.get("test_cfg") or {}
        for node in (test_cfg.get("rcnn"), test_cfg if "rcnn" not in test_cfg else None):
            if node is not None:
                node["score_thr"], node["max_per_img"] = score_threshold, max_detections
        self.model = MODELS.build(ConfigDict(model_cfg))
        self.model.init_weights()
        if found is not None and found.enum is None:  # a local file, as the config's load_from
            weights.load_matching(found, {"whole model": self.model, "backbone": self.model.backbone}, pretrained_strict)
        self.two_stage = hasattr(self.model, "roi_head")
        self.head = self.model.roi_head.bbox_head if self.two_stage else self.model.bbox_head
        if not hasattr(self.head, "loss_cls"):  # mmdet's SSDHead as released (NOTES)
            self.head.loss_cls = None
        if self.two_stage or not getattr(self.head, "use_sigmoid_cls", True):
            self.probs_kind = "softmax"
        else:
            self.probs_kind = "sigmoid"
        self.score_is_probability = True  # False once a head is seen multiplying by a score factor
        self.num_classes, self.image_size, self.feature_level = num_classes, image_size, int(feature_level)
        self._stash: list[torch.Tensor] = []
        self._maps = None
        (self.model.neck if getattr(self.model, "with_neck", False) else self.model.backbone) \
            .register_forward_hook(self._keep_maps)
        self.feature_dim = self._feature_width()

    def to(self, *args, **kwargs):
        """Through mmengine's own `to` as well: it tells the data preprocessor its device."""
        self.model.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def _keep_maps(self, module, inputs, output):
        if not self.training:
            self._maps = output

    def _feature_width(self) -> int:
        with probing(self.model) as model:
            maps = model.extract_feat(torch.zeros(1, 3, 64, 64))
        if not -len(maps) <= self.feature_level < len(maps):
            raise ValueError(f"feature_level {self.feature_level} is not a feature map of this model "
                             f"(it has {len(maps)})")
        return maps[self.feature_level].shape[1]

    def _inputs(self, images: list[torch.Tensor], targets: list[dict] | None, training: bool):
        """Resize to image_size squared and run the config's data preprocessor (it expects
        0-255 BGR, as its pipeline loads them)."""
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData

        s = self.image_size
        batch, _ = resize_square(images, s)
        inputs, samples = list(batch.flip(1) * 255), []
        for i, im in enumerate(images):
            h, w = im.shape[-2:]
            sample = DetDataSample(metainfo={"img_shape": (s, s), "ori_shape": (h, w),
                                             "scale_factor": (s / w, s / h)})
            if targets is not None:
                scale = torch.tensor([s / w, s / h, s / w, s / h], device=im.device)
                sample.gt_instances = InstanceData(bboxes=targets[i]["boxes"].float() * scale,
                                                   labels=targets[i]["labels"].long())
            samples.append(sample)
        data = self.model.data_preprocessor({"inputs": inputs, "data_samples": samples}, training)
        return data["inputs"], data["data_samples"]

    def losses(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        inputs, samples = self._inputs(images, targets, training=True)
        out = {}
        for name, value in self.model.loss(inputs, samples).items():
            if "loss" in name:  # mmengine's convention: other entries (accuracy, ...) are logs
                out[name] = sum(value) if isinstance(value, (list, tuple)) else value
        return out

    @contextmanager
    def _recording(self):
        """Swap the candidate-picking functions for recording ones and wrap the head's
        per-image post-processing so that each box gets its candidate's class vector."""
        from mmdet.models.layers import multiclass_nms
        from mmdet.models.utils import filter_scores_and_topk

        stash = self._stash
        stash.clear()

        def record_topk(scores, score_thr, topk, results=None):
            out = filter_scores_and_topk(scores, score_thr, topk, results)
            stash.append(scores[out[2]])
            return out

        def record_nms(multi_bboxes, multi_scores, score_thr, nms_cfg, max_num=-1, score_factors=None,
                       return_inds=False, box_dim=4):
            dets, labels, inds = multiclass_nms(multi_bboxes, multi_scores, score_thr, nms_cfg, max_num,
                                                score_factors, return_inds=True, box_dim=box_dim)
            stash.append(multi_scores[inds // (multi_scores.size(1) - 1)])  # the proposal's softmax
            return (dets, labels, inds) if return_inds else (dets, labels)

        head, model = self.head, self

        if self.two_stage:
            swaps, original = {multiclass_nms: record_nms}, head._predict_by_feat_single

            def per_image(*args, **kwargs):
                results = original(*args, **kwargs)
                if stash:
                    results.box_probs = stash.pop()
                return results
            head._predict_by_feat_single = per_image
        else:
            swaps, original = {filter_scores_and_topk: record_topk}, head._bbox_post_process

            def per_image(results, *args, **kwargs):
                if stash:
                    probs = torch.cat(stash)
                    stash.clear()
                    if len(probs) == len(results):
                        if model.probs_kind == "softmax":  # the head dropped the background column
                            probs = torch.cat([probs, (1 - probs.sum(1, keepdim=True)).clamp(min=0)], dim=1)
                        results.box_probs = probs
                if hasattr(results, "score_factors"):
                    model.score_is_probability = False
                return original(results, *args, **kwargs)
            head._bbox_post_process = per_image
        patched = []
        for function, replacement in swaps.items():
            for module, name in _holders(function):
                patched.append((module, name, function))
                setattr(module, name, replacement)
        try:
            yield
        finally:
            for module, name, value in patched:
                setattr(module, name, value)
            if self.two_stage:
                del head._predict_by_feat_single
            else:
                del head._bbox_post_process
            stash.clear()

    @torch.no_grad()
    def detect(self, images: list[torch.Tensor], al_outputs: bool = True) -> list[dict]:
        """`al_outputs=False`: MMDetection's own post-processing, boxes, scores and labels only."""
        inputs, samples = self._inputs(images, None, training=False)
        if not al_outputs:
            predicted = self.model.predict(inputs, samples, rescale=True)
            return [{"boxes": p.pred_instances.bboxes, "scores": p.pred_instances.scores,
                     "labels": p.pred_instances.labels} for p in predicted]
        with self._recording():
            predicted = self.model.predict(inputs, samples, rescale=True)
        feature_map = self._maps[self.feature_level]
        results, resized = [], []
        for p, sample in zip(predicted, samples):
            pred = p.pred_instances
            if len(pred) and "box_probs" not in pred:
                raise ValueError(f"{type(self.head).__name__}: its post-processing does not pick candidates "
                                 "through filter_scores_and_topk or multiclass_nms, so alb cannot recover the "
                                 "class vector of each box")
            probs = pred.box_probs if "box_probs" in pred else pred.scores.new_zeros(
                (0, self.num_classes + (self.probs_kind == "softmax")))
            sx, sy = sample.metainfo["scale_factor"]
            resized.append(pred.bboxes * pred.bboxes.new_tensor([sx, sy, sx, sy]))
            results.append({"boxes": pred.bboxes, "scores": pred.scores, "labels": pred.labels, "box_probs": probs})
        scale = feature_map.shape[-1] / samples[0].metainfo["batch_input_shape"][1]  # map / padded input
        box_features = pool_features(feature_map, resized, scale)
        side = max(1, round(self.image_size * scale))  # the map's cells over the image, not the padding
        for result, feats, fmap in zip(results, box_features, feature_map):
            result.update(box_features=feats, image_feature=fmap[:, :side, :side].float().mean(dim=(1, 2)))
        return results

