"""Classifiers with the three entry points the adapter needs.

`features(x) -> (embedding (B, D), feature maps)`: the penultimate embedding and the
intermediate maps (the learning-loss module reads them); `head(embedding) -> logits (B, C)`
applies dropout then the last linear layer. Dropout sits only before the head, so
MC-dropout passes can reuse one embedding per image (see `ClassifierAdapter.predict`).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from alb.models import weights


class Classifier(nn.Module):
    embedding_dim: int
    feature_channels: list[int]

    def __init__(self, embedding_dim: int, num_classes: int, dropout: float):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.embedding_dim = embedding_dim
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(embedding_dim, num_classes)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(embedding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[0])


class SmallCNN(Classifier):
    """Three 3x3 conv blocks and a linear embedding: trains in seconds on 8x8 digits."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32,
                 embedding_dim: int = 128, dropout: float = 0.25, batch_norm: bool = True,
                 pretrained: str | None = None, imagenet_weights: str | None = None, pretrained_strict: bool = True):
        super().__init__(embedding_dim, num_classes, dropout)
        found = weights.resolve(pretrained, imagenet_weights, "SmallCNN")
        w = width
        norm = nn.BatchNorm2d if batch_norm else (lambda channels: nn.Identity())
        self.block1 = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1), norm(w), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1), norm(2 * w), nn.ReLU(),
                                    nn.MaxPool2d(2))
        self.block3 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, padding=1), norm(4 * w), nn.ReLU(),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(4 * w, embedding_dim), nn.ReLU())
        self.feature_channels = [w, 2 * w, 4 * w]
        if found is not None:  # a whole SmallCNN's state dict
            weights.load_matching(found, {"whole model": self}, pretrained_strict)

    def features(self, x):
        f1 = self.block1(x)
        f2 = self.block2(f1)
        f3 = self.block3(f2)  # (B, 4w)
        return self.embed(f3), [f1, f2, f3[:, :, None, None]]


class ResNet18(Classifier):
    """torchvision's ResNet-18, with torchvision's module names (a ResNet-18 state dict loads
    by key); `cifar_stem` swaps the 7x7/2 conv + max-pool for a 3x3/1 conv, as is usual for
    32x32 inputs (He et al.; LLAL; the reality check).

    `pretrained` (null | imagenet | a path, `alb.models.weights`): `imagenet` loads
    `imagenet_weights` through torchvision before the stem is swapped (a CIFAR stem stays
    random); a path loads a whole classifier's or a ResNet-18 backbone's state dict. All
    layers train unless `trainable_layers` < 5 (then BatchNorm is frozen too)."""

    def __init__(self, num_classes: int, in_channels: int = 3, cifar_stem: bool = True, dropout: float = 0.0,
                 pretrained: str | None = None, imagenet_weights: str | None = None, pretrained_strict: bool = True,
                 trainable_layers: int = 5):
        super().__init__(512, num_classes, dropout)
        found = weights.resolve(pretrained, imagenet_weights, "ResNet-18")
        enum = weights.torchvision_weights(found.enum) if found is not None and found.enum else None
        net = torchvision.models.resnet18(weights=enum)
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.feature_channels = [64, 128, 256, 512]
        if found is not None and enum is None:
            weights.load_matching(found, {"whole model": self, "backbone": self}, pretrained_strict)
        if found is not None and int(trainable_layers) < 5:
            weights.freeze_resnet(self, trainable_layers)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        maps = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            maps.append(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1), maps


class LossPredictionModule(nn.Module):
    """Yoo & Kweon (2019) loss-prediction head: per map GAP -> FC -> ReLU, concatenated,
    then one linear layer to a scalar predicted loss."""

    def __init__(self, feature_channels: list[int], hidden: int = 128):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, hidden), nn.ReLU())
            for c in feature_channels)
        self.out = nn.Linear(hidden * len(feature_channels), 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        return self.out(torch.cat([b(m) for b, m in zip(self.branches, maps)], dim=1)).squeeze(1)
