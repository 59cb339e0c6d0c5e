"""The classification adapter: the only code that holds both a model and a pool.
It trains, evaluates, and turns pool rows into the fields a strategy asked for."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig
from hydra.utils import get_class

from alb import machine
from alb.config import build
from alb.datasets import ClassificationData, TorchSplit
from alb.datasets.transforms import classification_recipe
from alb.engine.runner import autocast
from alb.engine.train import accuracy, fit_classifier
from alb.errors import UserError
from alb.models.classifiers import Classifier, LossPredictionModule
from alb.models.roi import IMAGENET_MEAN, IMAGENET_STD
from alb.models.weights import is_random
from alb.progress import Progress
from alb.records import CLASSIFICATION_FIELDS
from alb.hooks import LossPredictionHook


class ClassifierAdapter:
    task = "classification"
    metric = "accuracy"
    metric_names = ["accuracy"]
    cost_columns: list[str] = []
    records_meta: dict = {}

    def __init__(self, model_cfg: DictConfig, trainer_cfg: DictConfig, data: ClassificationData,
                 device: torch.device, hook: LossPredictionHook | None = None, num_workers: int = 0):
        if hook is not None and not isinstance(hook, LossPredictionHook):
            raise UserError(f"the strategy's training hook {hook!r} has no classification version")
        self.model_cfg, self.cfg, self.data, self.device = model_cfg, trainer_cfg, data, device
        self.hook, self.num_workers = hook, num_workers
        self.model: Classifier | None = None
        self.loss_module: LossPredictionModule | None = None
        # a frozen backbone (alb.models.frozen): the head trains on cached features, not augmented
        self.frozen = bool(getattr(get_class(str(model_cfg._target_)), "frozen_features", False))
        self.augment = (None if self.frozen else
                        classification_recipe(trainer_cfg.get("augment"), data.pool.images[0].shape[-1]))
        # a pretrained network expects the statistics it was trained with
        pretrained = not is_random(model_cfg.get("pretrained")) and data.channels == 3 and not self.frozen
        self.normalisation = (IMAGENET_MEAN, IMAGENET_STD) if pretrained else None

    def reset(self, seed: int) -> None:
        """A fresh, randomly initialised model (and loss module), seeded; with a frozen backbone
        the data's images become their cached features first (once per adapter)."""
        if self.frozen and "frozen_features" not in self.data.extra:
            from alb.models.frozen import feature_data
            self.data = feature_data(self.model_cfg, self.data, self.device)
        torch.manual_seed(seed)
        self.model = build(self.model_cfg, num_classes=self.data.num_classes,
                           in_channels=self.data.channels).to(self.device)
        self.loss_module = (LossPredictionModule(self.model.feature_channels).to(self.device)
                            if self.hook is not None else None)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(),
                "loss_module": self.loss_module.state_dict() if self.loss_module is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.loss_module is not None:
            self.loss_module.load_state_dict(state["loss_module"])

    def fit(self, labelled_rows: np.ndarray, seed: int, progress: Progress | None = None, label: str = "train",
            checkpoint=None, tracker=None):
        train_set = TorchSplit(self.data.pool, labelled_rows, self.data, self.augment, self.normalisation)
        val_set = (TorchSplit(self.data.val, np.arange(len(self.data.val)), self.data, None, self.normalisation)
                   if self.data.val is not None else None)
        torch.manual_seed(seed)
        return fit_classifier(self.model, train_set, self.cfg, self.device, seed, self.loss_module, self.hook,
                              val_set, progress, self.num_workers, label, checkpoint, tracker)

    def labelling_cost(self, rows: np.ndarray) -> dict[str, int]:
        return {}  # one label per image: n_labelled is the cost

    def check_support(self) -> None:
        """Nothing to check before training (detection checks its detector's capabilities)."""

    def pseudo_labels(self, rows: np.ndarray) -> None:
        return None  # pseudo-labels are a detection method (Elezi et al.)

    def set_pseudo_labels(self, pseudo) -> None:
        if pseudo is not None:
            raise ValueError("classification has no pseudo-labels")

    def evaluate(self) -> dict[str, float]:
        test_set = TorchSplit(self.data.test, np.arange(len(self.data.test)), self.data, None, self.normalisation)
        return {"accuracy": accuracy(self.model, test_set, self.device, self.cfg.eval_batch_size, self.cfg.amp,
                                     self.num_workers)}

    @torch.no_grad()
    def predict(self, rows: np.ndarray, fields: tuple[str, ...], mc_passes: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
        """Fields for pool rows `rows`: probs (n, C), embedding (n, D), pred_loss (n,),
        mc_probs (T, n, C). Dropout sits only before the head, so the T MC-dropout passes
        re-apply dropout + head to one embedding per image (same result as T full passes)."""
        unknown = set(fields) - set(CLASSIFICATION_FIELDS)
        if unknown:
            raise ValueError(f"unknown classification fields {sorted(unknown)}; known: {CLASSIFICATION_FIELDS}")
        if "pred_loss" in fields and self.loss_module is None:
            raise ValueError("pred_loss needs the learning-loss module (a strategy with a LossPredictionHook)")
        if "mc_probs" in fields:
            if mc_passes < 1:
                raise ValueError("mc_probs needs mc_passes >= 1")
            if self.model.dropout.p == 0:
                raise UserError("this strategy uses MC dropout but the model has dropout 0: set model.dropout=0.3 "
                                "(for every strategy you compare, so they share one model)")
        self.model.eval()
        data = machine.loader(TorchSplit(self.data.pool, rows, self.data, None, self.normalisation), self.num_workers,
                              self.device, batch_size=self.cfg.eval_batch_size)
        embeddings, probs, pred_loss = [], [], []
        for x, _, _ in machine.batches(data, "pool inference"):
            with autocast(self.device, self.cfg.amp):
                embedding, maps = self.model.features(x.to(self.device))
                embeddings.append(embedding.float())
                probs.append(torch.softmax(self.model.head(embedding).float(), dim=1))
                if "pred_loss" in fields:
                    pred_loss.append(self.loss_module(maps).float())
        out = {}
        emb = torch.cat(embeddings) if embeddings else torch.empty(0, self.model.embedding_dim, device=self.device)
        if "embedding" in fields:
            out["embedding"] = emb.cpu().numpy()
        if "probs" in fields:
            out["probs"] = (torch.cat(probs) if probs else torch.empty(0, self.data.num_classes)).cpu().numpy()
        if "pred_loss" in fields:
            out["pred_loss"] = (torch.cat(pred_loss) if pred_loss else torch.empty(0)).cpu().numpy()
        if "mc_probs" in fields:
            torch.manual_seed(seed)
            self.model.dropout.train()
            out["mc_probs"] = torch.stack([torch.softmax(self.model.head(emb), dim=1)
                                           for _ in range(mc_passes)]).cpu().numpy()
            self.model.dropout.eval()
        return out
