"""The detection adapter: the only code that holds both a detector and a pool. It trains,
evaluates on the test split, and turns pool rows into the flat detection fields a strategy
asked for (alb.records)."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from alb.config import build, check_requirement
from alb.datasets.detection import DetectionData, DetectionSplit, DetectionTorchSet, collate, flip_boxes
from alb.engine.difficulty import DifficultyTracker, box_difficulty, matched_difficulties
from alb.engine.train import autocast
from alb.engine.train_det import fit_detector
from alb.errors import UserError
from alb.hooks import DifficultyHook
from alb.progress import Progress
from alb.records import BOX_FIELDS, DETECTION_FIELDS, FLIP


DESCRIPTIVE_KEYS = ("task", "requires", "install")


def detector_kwargs(model_cfg: DictConfig) -> dict:
    """The model node without the keys that describe it rather than build it; a UserError
    naming the install command when its optional package is missing."""
    check_requirement(model_cfg)
    node = OmegaConf.to_container(model_cfg, resolve=True)
    for key in DESCRIPTIVE_KEYS:
        node.pop(key, None)
    return node


class DetectorAdapter:
    task = "detection"
    metric = "map"

    def __init__(self, model_cfg: DictConfig, trainer_cfg: DictConfig, data: DetectionData, device: torch.device,
                 hook=None, num_workers: int = 0):
        if hook is not None and not isinstance(hook, DifficultyHook):
            raise UserError(f"the strategy's training hook {hook!r} has no detection version yet")
        self.model_cfg, self.cfg, self.data, self.device = model_cfg, trainer_cfg, data, device
        self.hook, self.num_workers = hook, num_workers
        self.model = None
        self.metric_names = data.metric_names()
        self.hook_state: dict[str, np.ndarray] = {}  # what the hook produced in the last fit

    def reset(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = build(detector_kwargs(self.model_cfg), num_classes=self.data.num_classes).to(self.device)
        if self.hook is not None and self.hook.mode == "training" and not getattr(self.model, "supports_positives", False):
            raise UserError(f"strategy hook {self.hook!r}: model {self.model_cfg.get('arch', self.model_cfg._target_)} "
                            "cannot record positive predictions during training (RetinaNet, FCOS, Faster R-CNN and "
                            "CenterNet can); use mode=post (computed after training on the labelled set) or auto")
        self.hook_state = {}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "hook_state": dict(self.hook_state)}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.hook_state = dict(state.get("hook_state") or {})

    @property
    def records_meta(self) -> dict:
        return {"probs_kind": self.model.probs_kind, "num_classes": self.data.num_classes, **self.hook_state}

    def fit(self, labelled_rows: np.ndarray, seed: int, progress: Progress | None = None, label: str = "train") -> None:
        train_set = DetectionTorchSet(self.data.pool, labelled_rows, flip=self.cfg.flip, for_training=True,
                                      keep_difficult=self.data.train_difficult)
        validate = (lambda: self.evaluate(self.data.val)["map"]) if self.data.val is not None else None
        tracker, on_step = None, None
        during = (self.hook is not None and self.hook.mode != "post"
                  and getattr(self.model, "supports_positives", False))
        if self.hook is not None:
            tracker = DifficultyTracker(self.data.num_classes, self.hook.momentum)
        if during:
            def on_step():
                if self.model.positives is not None:
                    classes, prob, iou = self.model.positives
                    tracker.update(classes, box_difficulty(prob, iou, self.hook.xi))
                    self.model.positives = None

            self.model.track_positives = True
        try:
            fit_detector(self.model, train_set, self.cfg, self.device, seed, progress, self.num_workers, label,
                         validate, on_step)
        finally:
            if during:
                self.model.track_positives = False
        if tracker is not None:
            if not during:
                self._post_training_difficulty(tracker, train_set)
            self.hook_state = {"class_difficulty": tracker.difficulty.copy(),
                               "class_frequency": self._class_frequency(train_set),
                               "difficulty_source": "training" if during else "post"}

    def _post_training_difficulty(self, tracker: DifficultyTracker, train_set: DetectionTorchSet) -> None:
        """DCUS for a detector that cannot report its training positives: the labelled
        images' detections matched to their training targets (an approximation, see the hook)."""
        for position, det in self.detections(self.data.pool, train_set.rows):
            classes, q = matched_difficulties(det, train_set.target(position), self.hook.xi)
            tracker.update(classes, q)

    def _class_frequency(self, train_set: DetectionTorchSet) -> np.ndarray:
        """Fraction of the labelled training boxes in each class (C,) (PPAL's DCUS-Freq)."""
        counts = np.zeros(self.data.num_classes)
        for i in range(len(train_set)):
            np.add.at(counts, train_set.target(i)["labels"].numpy(), 1)
        return counts / max(counts.sum(), 1)

    def detections(self, split: DetectionSplit, rows: np.ndarray, flipped: bool = False):
        """Yield (row position, detection dict of CPU tensors) for `rows` of `split`, in order.
        `flipped`: run on the mirrored image and map the boxes back."""
        self.model.eval()
        loader = DataLoader(DetectionTorchSet(split, rows), batch_size=self.cfg.eval_batch_size,
                            num_workers=self.num_workers, collate_fn=collate)
        with torch.no_grad():
            for images, _, positions in loader:
                images = [im.to(self.device) for im in images]
                if flipped:
                    images = [im.flip(-1) for im in images]
                with autocast(self.device, self.cfg.amp):
                    outputs = self.model.detect(images)
                for image, position, out in zip(images, positions, outputs):
                    out = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in out.items()}
                    if flipped:
                        out["boxes"] = flip_boxes(out["boxes"], image.shape[-1])
                    yield position, out

    def evaluate(self, split: DetectionSplit | None = None) -> dict[str, float]:
        """The dataset's metrics on `split` (default: the test split)."""
        split = self.data.test if split is None else split
        detections = [{k: out[k].numpy() for k in ("boxes", "scores", "labels")}
                      for _, out in self.detections(split, np.arange(len(split)))]
        return self.data.evaluate(detections, split)

    def predict(self, rows: np.ndarray, fields: tuple[str, ...], mc_passes: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
        """Flat detection fields for pool rows `rows` (see alb.records): `offsets` comes with
        any box field, `flip_offsets` with any flipped one."""
        unknown = set(fields) - set(DETECTION_FIELDS)
        if unknown:
            raise ValueError(f"unknown detection fields {sorted(unknown)}; known: {DETECTION_FIELDS}")
        if mc_passes:
            raise UserError("MC-dropout fields have no detection version yet")
        out: dict[str, np.ndarray] = {}
        for flipped in (False, True):
            prefix = FLIP if flipped else ""
            wanted = [f.removeprefix(prefix) for f in fields if f.startswith(FLIP) == flipped]
            if not wanted:
                continue
            per_image = {f: [] for f in wanted}
            counts = []
            for _, det in self.detections(self.data.pool, rows, flipped):
                counts.append(len(det["scores"]))
                for f in wanted:
                    per_image[f].append(det["image_feature" if f == "image_features" else f])
            for f in wanted:
                if f == "image_features":
                    dim = self.model.feature_dim
                    out[prefix + f] = torch.stack(per_image[f]).numpy() if counts else np.zeros((0, dim), np.float32)
                else:
                    out[prefix + f] = torch.cat(per_image[f]).numpy() if counts else _empty(f, self)
            if any(f in BOX_FIELDS for f in wanted):
                out[prefix + "offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return out


def _empty(field: str, adapter: DetectorAdapter) -> np.ndarray:
    width = {"boxes": 4, "box_features": adapter.model.feature_dim,
             "box_probs": adapter.data.num_classes + (adapter.model.probs_kind == "softmax")}
    return np.zeros((0, width[field]) if field in width else 0, np.int64 if field == "labels" else np.float32)
