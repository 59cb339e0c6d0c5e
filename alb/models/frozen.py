"""Frozen-backbone classification (`model=frozen_resnet50`, `frozen_vit_b_16`, ...): a
pretrained torchvision backbone turns every image into a feature vector once, the vectors
are cached on disk, and each cycle trains only a linear (or small MLP) head on them, as
LabelBench, DAL-Toolbox's `cache_features` and the AL-with-foundation-models studies do: an
AL experiment of minutes instead of hours. Strategies see the same fields as with any
classifier (probs, embedding, ...); they do not know the features are cached.

The cache (`$ALB_CACHE_DIR/embeddings/<key>.npy`, with `<key>.json` saying what it holds) is
keyed by the backbone's name, the weights file's sha256, the dataset (its name, the split,
its sample ids and a fingerprint of its first, middle and last images) and the transform
(the weights' own preprocessing, or resize + ImageNet statistics for a local file), so it is
reused across strategies, seeds and sweeps, and a change to any part makes a new entry.
Augmentation is off: a cached feature is of the image as it is."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import torch
import torchvision
from torch import nn

from alb.config import cache_root
from alb.datasets.base import ClassificationData, Split
from alb.errors import UserError
from alb.models import weights
from alb.models.classifiers import Classifier
from alb.models.roi import IMAGENET_MEAN, IMAGENET_STD

HEADS = ("linear", "mlp")
FORMAT = 1


class FrozenHead(Classifier):
    """The trained part: `head=linear` (the embedding is the feature itself) or `mlp` (one
    hidden layer of `hidden` units with ReLU: the embedding is the hidden layer). Its input is
    a cached feature vector, given as a (B, D, 1, 1) "image" so that the classification
    adapter's datasets carry it unchanged. The backbone settings (`backbone`, `pretrained`,
    `imagenet_weights`, `image_size`) say which features (`feature_data`)."""

    frozen_features = True  # the adapter trains on cached features (`feature_data`)

    def __init__(self, num_classes: int, in_channels: int, backbone: str = "resnet50", head: str = "linear",
                 hidden: int = 512, dropout: float = 0.0, pretrained: str | None = "imagenet",
                 imagenet_weights: str | None = None, image_size: int | None = None, batch_size: int = 128):
        from alb.errors import check_choice
        check_choice("model.head", head, HEADS)
        width = hidden if head == "mlp" else in_channels
        super().__init__(width, num_classes, dropout)
        self.embed = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU()) if head == "mlp" else nn.Identity()
        self.feature_channels = [in_channels]

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        flat = torch.flatten(x, 1)  # (B, D)
        return self.embed(flat), [x]


class FeatureImages:
    """Cached features (N, D) seen as images (D, 1, 1) by the classification datasets."""

    def __init__(self, features: np.ndarray):
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.features[i].view(-1, 1, 1)


def _recipe(model_cfg) -> tuple[dict, object, object]:
    """What the features depend on, without loading the network: (identity: the backbone's
    name and its weights file's name and sha256; the preprocessing; the resolved weights)."""
    name = str(model_cfg.get("backbone", "resnet50"))
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise UserError(f"model.backbone={name!r} is not a torchvision classification model "
                        f"(e.g. resnet50, vit_b_16, convnext_base; torchvision.models.list_models())")
    found = weights.resolve(model_cfg.get("pretrained"), model_cfg.get("imagenet_weights"), name)
    if found is None:
        raise UserError("a frozen backbone needs pretrained weights: model.pretrained=imagenet or a path "
                        "(random features are not worth caching)")
    enum = weights.torchvision_weights(found.enum) if found.enum else None
    size = model_cfg.get("image_size")
    if enum is not None and size is None:
        transform = enum.transforms()  # the weights' own preprocessing (resize, crop, statistics)
    else:
        side = int(size or 224)
        transform = torchvision.transforms.v2.Compose([
            torchvision.transforms.v2.Resize((side, side), antialias=True),
            torchvision.transforms.v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return {"backbone": name, **found.identity}, transform, found


def _network(model_cfg, found) -> nn.Module:
    """The torchvision backbone with its weights, its last linear layer removed (the
    classifier's: what comes out are the features)."""
    enum = weights.torchvision_weights(found.enum) if found.enum else None
    net = torchvision.models.get_model(str(model_cfg.get("backbone", "resnet50")), weights=enum)
    if enum is None:
        weights.load_matching(found, {"whole model": net}, True)
    last = [key for key, module in net.named_modules() if isinstance(module, nn.Linear)][-1]
    parent = net.get_submodule(last.rpartition(".")[0]) if "." in last else net
    setattr(parent, last.rpartition(".")[2], nn.Identity())
    return net.eval()


def _fingerprint(split: Split) -> str:
    """sha256 of the split's ids and of its first, middle and last images."""
    digest = hashlib.sha256("\n".join(split.ids).encode())
    for i in sorted({0, len(split) // 2, len(split) - 1}) if len(split) else ():
        digest.update(split.images[i].numpy().tobytes())
    return digest.hexdigest()


def _extract(net: nn.Module, transform, split: Split, device: torch.device, batch_size: int) -> np.ndarray:
    from alb.progress import make_progress
    net = net.to(device)
    out = []
    with torch.no_grad(), make_progress(True) as progress:
        task = progress.add_task(f"features ({len(split)} images)", total=len(split))
        for start in range(0, len(split), batch_size):
            rows = range(start, min(start + batch_size, len(split)))
            images = [split.images[i] for i in rows]
            images = [im.expand(3, -1, -1) if im.shape[0] == 1 else im for im in images]  # grey -> RGB
            batch = torch.stack([transform(im) for im in images]).to(device)
            out.append(net(batch).float().flatten(1).cpu())
            progress.update(task, advance=len(rows))
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def cached_features(model_cfg, split: Split, split_name: str, dataset_name: str,
                    device: torch.device) -> tuple[np.ndarray, bool]:
    """(N, D) features of `split` from the cache, or extracted (the network loaded only then)
    and cached; and whether the cache held them."""
    from alb.results import atomic_write_bytes, atomic_write_text
    identity, transform, found = _recipe(model_cfg)
    key = {"format": FORMAT, **identity, "dataset": dataset_name, "split": split_name, "n": len(split),
           "fingerprint": _fingerprint(split), "transform": repr(transform)}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_root() / "embeddings" / f"{name}.npy"
    if path.is_file():
        try:
            features = np.load(path)
            if features.shape[0] == len(split):
                return features, True
        except (OSError, ValueError):
            pass  # a damaged entry: extracted again and replaced
    features = _extract(_network(model_cfg, found), transform, split, device, int(model_cfg.get("batch_size", 128)))
    buffer = io.BytesIO()
    np.save(buffer, features)
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_text(path.with_suffix(".json"), json.dumps(key, indent=1, sort_keys=True))
    return features, False


def feature_data(model_cfg, data: ClassificationData, device: torch.device) -> ClassificationData:
    """`data` with every split's images replaced by their cached backbone features."""
    splits = {}
    for split_name in ("pool", "test", "val"):
        split = getattr(data, split_name)
        if split is not None:
            features, _ = cached_features(model_cfg, split, split_name, data.name, device)
            split = Split(FeatureImages(features), split.labels, split.ids)
        splits[split_name] = split
    dim = int(splits["pool"].images.features.shape[1])
    return ClassificationData(splits["pool"], splits["test"], data.num_classes, dim, data.class_names, (0.0,), (1.0,),
                              splits["val"], data.name, data.task, {**data.extra, "frozen_features": dim})
