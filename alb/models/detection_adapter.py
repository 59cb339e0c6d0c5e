"""The detection adapter: the only code that holds both a detector and a pool. It trains,
evaluates on the test split, and turns pool rows into the flat detection fields a strategy
asked for (alb.records).

The detector protocol (every detector, random or pretrained, is an `nn.Module`) with
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

CenterNet is alb's own (`alb/models/centernet.py`: no maintained library ships it for
torchvision backbones); the torchvision detectors are torchvision's own
(`alb/models/torchvision_detectors.py`), with `postprocess_detections` replaced on the
instance by a copy that carries the candidate index through top-k and NMS, so the class
vector of each kept box is the one it came from. Boxes, scores and labels are unchanged.
Shared helpers are in `alb/models/roi.py`. This module names them all (configs'
`_target_: alb.models.detectors.CenterNet` keep working).

Optional, for the methods that change training: `dense_predictions(images)` (every
candidate's box and class vector, with gradients: flip-consistency SSL), a `pseudo` flag in a
target (Elezi's Eq. 8), `dropout_site` (MC dropout), per-image losses and `feature_levels`
(learning loss); `supports_*` attributes say which a detector has.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from alb import machine
from alb.config import build, check_requirement
from alb.datasets.transforms import detection_augment, images_to
from alb.datasets.detection import DetectionData, DetectionSplit, DetectionTorchSet, collate
from alb.engine.difficulty import DifficultyTracker, box_difficulty, matched_difficulties
from alb.engine.runner import autocast
from alb.engine.train import loss_ranking
from alb.engine.train_det import fit_detector, labelled_share, ssl_method, training_length
from alb.errors import UserError
from alb.hooks import DifficultyHook, DropoutHook, LossPredictionHook, PseudoLabelHook
from alb.models.classifiers import LossPredictionModule
from alb.models.dropout import install_head_dropout
from alb.models.views import cutout, make_view
from alb.progress import Progress
from alb.records import BOX_FIELDS, DETECTION_FIELDS, VIEWS, view_of
from alb.select.matching import matched_view_probs

MIN_PSEUDO_SIZE = 1.0  # pixels: smaller pseudo-boxes are dropped (torchvision refuses empty ones)
DETECTION_HOOKS = (DifficultyHook, PseudoLabelHook, DropoutHook, LossPredictionHook)


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
        if hook is not None and not isinstance(hook, DETECTION_HOOKS):
            raise UserError(f"the strategy's training hook {hook!r} has no detection version yet")
        self.model_cfg, self.cfg, self.data, self.device = model_cfg, trainer_cfg, data, device
        self.hook, self.num_workers = hook, num_workers
        self.model = None
        self.dropout = None
        self.loss_module: LossPredictionModule | None = None
        self.metric_names = data.metric_names()
        self._box_counts = data.pool.box_counts()  # (N,) boxes per pool image: the labelling cost
        self.hook_state: dict[str, np.ndarray] = {}  # what the hook produced in the last fit
        self.pseudo: dict[str, np.ndarray] | None = None  # pseudo-labels for the next fit

    @property
    def model_name(self) -> str:
        return str(self.model_cfg.get("arch", self.model_cfg.get("_target_")))

    def _refuse(self, model, capability: str, what: str, which: str) -> None:
        if not getattr(model, capability, False):
            raise UserError(f"{what} is not supported on model {self.model_name} (it is on {which}); "
                            "choose one of those models or leave the setting out")

    def _check(self, model) -> None:
        """What the trainer settings and the strategy's hook ask of `model`: a UserError when
        it cannot (before any training: see `check_support`)."""
        if isinstance(self.hook, DifficultyHook) and self.hook.mode == "training":
            self._refuse(model, "supports_positives", f"strategy hook {self.hook!r} (positives recorded in "
                         "training; mode=post or auto computes them after training)",
                         "RetinaNet, FCOS, Faster R-CNN, CenterNet")
        training_length(self.cfg, 1)  # a bad trainer.iterations stops here
        detection_augment(self.cfg)  # and a bad trainer.augment
        if ssl_method(self.cfg):
            self._refuse(model, "supports_consistency", f"trainer.ssl={self.cfg.ssl}", "CenterNet, RetinaNet, SSD")
            labelled_share(self.cfg)
        if isinstance(self.hook, PseudoLabelHook):
            self._refuse(model, "supports_pseudo_labels", "pseudo-labels with Elezi's Eq. 8 loss",
                         "CenterNet, RetinaNet, SSD")
        if isinstance(self.hook, LossPredictionHook):
            self._refuse(model, "supports_loss_prediction", "learning loss for detection (per-image losses and "
                         "multi-level features)", "CenterNet, SSD")
        if isinstance(self.hook, DropoutHook) and getattr(model, "dropout_site", None) is None:
            raise UserError(f"MC dropout is not supported on model {self.model_name} (it has no dropout site)")

    def check_support(self) -> None:
        """Build the detector once on the CPU and check that it supports what is asked, so a
        run is refused before it writes anything."""
        torch.manual_seed(0)
        self._check(build(detector_kwargs(self.model_cfg), num_classes=self.data.num_classes))

    def reset(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = build(detector_kwargs(self.model_cfg), num_classes=self.data.num_classes).to(self.device)
        self._check(self.model)
        self.dropout = (install_head_dropout(self.model, self.hook.rate, self.hook.in_training)
                        if isinstance(self.hook, DropoutHook) else None)
        self.loss_module = (LossPredictionModule(self.model.level_channels).to(self.device)
                            if isinstance(self.hook, LossPredictionHook) else None)
        self.hook_state = {}

    @property
    def cost_columns(self) -> list[str]:
        """The cost columns of cycles.csv: the boxes labelled, and where the pool holds images
        without boxes (`dataset.empty_images=keep`) how many of those were labelled."""
        return ["n_boxes_labelled", *(["n_empty_labelled"] if (self._box_counts == 0).any() else [])]

    def labelling_cost(self, rows: np.ndarray) -> dict[str, int]:
        """What labelling `rows` costs beyond the image count: the annotated boxes (difficult
        and crowd ones included: an annotator draws them too)."""
        counts = self._box_counts[np.asarray(rows, np.int64)]
        cost = {"n_boxes_labelled": int(counts.sum())}
        if "n_empty_labelled" in self.cost_columns:
            cost["n_empty_labelled"] = int((counts == 0).sum())
        return cost

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "hook_state": dict(self.hook_state),
                "loss_module": self.loss_module.state_dict() if self.loss_module is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.hook_state = dict(state.get("hook_state") or {})
        if self.loss_module is not None:
            self.loss_module.load_state_dict(state["loss_module"])

    @property
    def records_meta(self) -> dict:
        return {"probs_kind": self.model.probs_kind, "num_classes": self.data.num_classes, **self.hook_state}

    def fit(self, labelled_rows: np.ndarray, seed: int, progress: Progress | None = None, label: str = "train",
            checkpoint=None, tracker=None):
        augment = detection_augment(self.cfg)
        ssl = bool(self.cfg.get("ssl"))
        # with SSL, pseudo-labelled images are drawn on the unlabelled side of each batch (the
        # authors' balanced sampler); without, they join the labelled images
        pseudo_side = self.cfg.get("ssl_pseudo", "unlabelled") if ssl else "labelled"
        if pseudo_side not in ("unlabelled", "labelled"):
            raise UserError(f"trainer.ssl_pseudo must be unlabelled or labelled, got {pseudo_side!r}")
        train_set = DetectionTorchSet(self.data.pool, labelled_rows, augment=augment, for_training=True,
                                      keep_difficult=self.data.train_difficult,
                                      pseudo=self.pseudo if pseudo_side == "labelled" else None)
        unlabelled_set = None
        if ssl:
            unlabelled = np.setdiff1d(np.arange(len(self.data.pool)), labelled_rows)
            unlabelled_set = DetectionTorchSet(self.data.pool, unlabelled, augment=augment, for_training=True,
                                               pseudo=self.pseudo if pseudo_side == "unlabelled" else None,
                                               labelled=False)
        validate = (lambda: self.evaluate(self.data.val)["map"]) if self.data.val is not None else None
        difficulties = None
        difficulty = isinstance(self.hook, DifficultyHook)
        during = difficulty and self.hook.mode != "post" and getattr(self.model, "supports_positives", False)
        if difficulty:
            difficulties = DifficultyTracker(self.data.num_classes, self.hook.momentum)

        def read_positives() -> None:  # after each step: the step's positives update the class difficulties
            if self.model.positives is not None:
                classes, prob, iou = self.model.positives
                difficulties.update(classes, box_difficulty(prob, iou, self.hook.xi))
                self.model.positives = None

        on_step = read_positives if during else None
        if during:
            self.model.track_positives = True
        extra_loss = self._learning_loss() if self.loss_module is not None else None
        extras = {name: obj for name, obj in (("loss_module", self.loss_module), ("difficulty", difficulties))
                  if obj is not None}
        try:
            stats = fit_detector(self.model, train_set, self.cfg, self.device, seed, progress, self.num_workers,
                                 label, validate, on_step, unlabelled_set, extra_loss,
                                 list(self.loss_module.parameters()) if self.loss_module is not None else None,
                                 checkpoint, extras, tracker)
        finally:
            self.model.track_positives = self.model.track_image_losses = False
        if difficulties is not None:
            if not during:
                self._post_training_difficulty(difficulties, train_set)
            self.hook_state = {"class_difficulty": difficulties.difficulty.copy(),
                               "class_frequency": self._class_frequency(train_set),
                               "difficulty_source": "training" if during else "post"}
        return stats

    def _learning_loss(self):
        """Yoo & Kweon's detection form: the module predicts each image's detector loss from
        the multi-level maps, trained with the margin ranking loss; its input is detached
        from the detector after `detach_fraction` of the steps."""
        hook, module = self.hook, self.loss_module
        self.model.track_image_losses = True
        module.train()

        def extra_loss(step: int, total_steps: int) -> dict:
            maps = self.model.level_maps
            if step > hook.detach_fraction * total_steps:  # as LLAL's "epoch > 120 of 200"
                maps = [m.detach() for m in maps]
            predicted = module([m.float() for m in maps]).float()
            return {"loss_prediction": hook.weight * loss_ranking(predicted, self.model.image_losses, hook.margin)}

        return extra_loss

    def pseudo_labels(self, rows: np.ndarray) -> dict[str, np.ndarray] | None:
        """Elezi's pseudo-labels (PseudoLabelHook) from the current model on pool `rows`: every
        detection with score >= tau2 and at least `MIN_PSEUDO_SIZE` pixels wide and high (a
        degenerate box cannot be a training target), as flat arrays `rows (P,)`, `boxes (P, 4)`,
        `labels (P,)`, `scores (P,)`. None when the strategy did not ask for them."""
        if not isinstance(self.hook, PseudoLabelHook):
            return None
        found = {"rows": [], "boxes": [], "labels": [], "scores": []}
        for position, det in self.detections(self.data.pool, rows):
            size = det["boxes"][:, 2:] - det["boxes"][:, :2]
            keep = (det["scores"] >= self.hook.threshold) & (size >= MIN_PSEUDO_SIZE).all(dim=1)
            found["rows"].append(np.full(int(keep.sum()), rows[position], np.int64))
            for key in ("boxes", "labels", "scores"):
                found[key].append(det[key][keep].numpy())
        empty = {"rows": np.zeros(0, np.int64), "boxes": np.zeros((0, 4), np.float32),
                 "labels": np.zeros(0, np.int64), "scores": np.zeros(0, np.float32)}
        return {k: np.concatenate(v) if v else empty[k] for k, v in found.items()}

    def set_pseudo_labels(self, pseudo: dict[str, np.ndarray] | None) -> None:
        """Pseudo-labels (as `pseudo_labels` returns them) to train on in the next `fit`."""
        self.pseudo = pseudo

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

    def detections(self, split: DetectionSplit, rows: np.ndarray, view: str | None = None,
                   phase: str = "pool inference", seed: int = 0):
        """Yield (row position, detection dict of CPU tensors) for `rows` of `split`, in order.
        `view` (`alb.models.views`: flip, cutout, scale, rotate): run on that view of the image
        and map the boxes back to the image's frame; cut-out places its rectangles beside the
        image's own detections (found first), drawn from (`seed`, row). A stop signal ends it
        between batches (`phase` names it)."""
        self.model.eval()
        data = machine.loader(DetectionTorchSet(split, rows), self.num_workers, self.device,
                              batch_size=self.cfg.eval_batch_size, collate_fn=collate)
        with torch.no_grad():
            for images, _, positions in machine.batches(data, phase):
                images = images_to(images, self.device)
                backs = [None] * len(images)
                if view == "cutout":
                    with autocast(self.device, self.cfg.amp):
                        found = self.model.detect(images)
                    images = [cutout(im, out["boxes"], torch.Generator().manual_seed(
                        int(seed) * 1_000_003 + int(rows[p]))) for im, out, p in zip(images, found, positions)]
                elif view is not None:
                    images, backs = map(list, zip(*(make_view(im, view) for im in images)))
                with autocast(self.device, self.cfg.amp):
                    outputs = self.model.detect(images)
                for back, position, out in zip(backs, positions, outputs):
                    out = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in out.items()}
                    if back is not None:
                        out["boxes"] = back(out["boxes"])
                    yield position, out

    def evaluate(self, split: DetectionSplit | None = None) -> dict[str, float]:
        """The dataset's metrics on `split` (default: the test split)."""
        split = self.data.test if split is None else split
        # a detector may evaluate at other thresholds than it hands strategies (SSD as ssd.pytorch)
        with getattr(self.model, "evaluation_thresholds", nullcontext)():
            detections = [{k: out[k].numpy() for k in ("boxes", "scores", "labels")}
                          for _, out in self.detections(split, np.arange(len(split)), phase="evaluation")]
        return self.data.evaluate(detections, split)

    def predict(self, rows: np.ndarray, fields: tuple[str, ...], mc_passes: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
        """Flat detection fields for pool rows `rows` (see alb.records): `offsets` comes with
        any box field, `flip_offsets` with any flipped one."""
        unknown = set(fields) - set(DETECTION_FIELDS)
        if unknown:
            raise ValueError(f"unknown detection fields {sorted(unknown)}; known: {DETECTION_FIELDS}")
        if "pred_loss" in fields:
            if self.loss_module is None:
                raise ValueError("pred_loss needs the learning-loss module (a strategy with a LossPredictionHook)")
            fields = tuple(f for f in fields if f != "pred_loss")
            out_loss = self._predicted_loss(rows)
        else:
            out_loss = None
        labels = None
        if "label_counts" in fields:  # from the annotations: only ever asked for labelled rows
            fields = tuple(f for f in fields if f != "label_counts")
            labels = np.zeros((len(rows), self.data.num_classes), np.int64)
            for k, row in enumerate(rows):
                np.add.at(labels[k], np.asarray(self.data.pool.annotations[int(row)]["labels"], np.int64), 1)
        if "mc_box_probs" in fields and self.dropout is None:
            raise ValueError("mc_box_probs needs dropout before the heads (a strategy with a DropoutHook)")
        out: dict[str, np.ndarray] = {}
        if "mc_box_probs" in fields:  # the passes match the deterministic boxes
            fields = tuple(dict.fromkeys([*fields, "boxes", "box_probs"]))
        for view in (None, *VIEWS):
            prefix = f"{view}_" if view else ""
            wanted = [f.removeprefix(prefix) for f in fields if view_of(f) == view and f != "mc_box_probs"]
            if not wanted:
                continue
            per_image = {f: [] for f in wanted}
            counts = []
            for _, det in self.detections(self.data.pool, rows, view, seed=seed):
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
        if "mc_box_probs" in fields:
            out["mc_box_probs"] = self._mc_box_probs(rows, out, self.hook.passes, seed)
        if out_loss is not None:
            out["pred_loss"] = out_loss
        if labels is not None:
            out["label_counts"] = labels
        return out

    @torch.no_grad()
    def _predicted_loss(self, rows: np.ndarray) -> np.ndarray:
        """(n,) the learning-loss module's predicted loss per pool row."""
        self.model.eval()
        self.loss_module.eval()
        data = machine.loader(DetectionTorchSet(self.data.pool, rows), self.num_workers, self.device,
                              batch_size=self.cfg.eval_batch_size, collate_fn=collate)
        predicted = []
        for images, _, _ in machine.batches(data, "pool inference"):
            with autocast(self.device, self.cfg.amp):
                maps = self.model.feature_levels(images_to(images, self.device))
                predicted.append(self.loss_module([m.float() for m in maps]).float().cpu())
        return torch.cat(predicted).numpy() if predicted else np.zeros(0, np.float32)

    def _mc_box_probs(self, rows: np.ndarray, out: dict, passes: int, seed: int) -> np.ndarray:
        """(T, M, C'): each deterministic box's class vector in T dropout passes, from the
        pass's detection of largest IoU with it (the background row if it has none)."""
        torch.manual_seed(seed)
        self.dropout.active = True
        try:
            stacked = [matched_view_probs(out, self.predict(rows, ("boxes", "box_probs")), self.model.probs_kind)
                       for _ in range(passes)]
        finally:
            self.dropout.active = False
        return np.stack(stacked) if stacked else np.zeros((0, *out["box_probs"].shape), np.float32)


def _empty(field: str, adapter: DetectorAdapter) -> np.ndarray:
    width = {"boxes": 4, "box_features": adapter.model.feature_dim,
             "box_probs": adapter.data.num_classes + (adapter.model.probs_kind == "softmax")}
    return np.zeros((0, width[field]) if field in width else 0, np.int64 if field == "labels" else np.float32)
