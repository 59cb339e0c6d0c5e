"""Pretrained weights (`model.pretrained`): the one place that turns the setting into a
state dict and loads it into a model, for every adapter.

- `null`: random initialisation.
- `imagenet`: the torchvision weights enum the model's yaml names (`imagenet_weights:
  ResNet50_Weights.IMAGENET1K_V1`), through torchvision's own weights API and the torch hub
  cache, `$TORCH_HOME/hub/checkpoints/<file name>` (torchvision downloads it where the network
  allows; alb has no downloader of its own). Offline with the file absent: a `UserError`
  naming the file, the folder and the URL.
- a path to a `.pth` / `.pt` file: a whole model's or a backbone's state dict (also inside a
  checkpoint's `state_dict` / `model` entry), matched by key after stripping `module.`.
  Unmatched keys are an error listing up to 10 of them, unless `model.pretrained_strict=false`.

Pretrained backbones are trained as torchvision's detection builders and MMDetection
(`frozen_stages=1`, `norm_eval=True`) train them: BatchNorm frozen (`FrozenBatchNorm2d`) and
only the top `model.trainable_layers` stages trainable (`freeze_resnet`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from alb.errors import UserError

IMAGENET = "imagenet"
# keys that belong to a classification network's head, not to a backbone a detector reuses
HEAD_PREFIXES = ("fc.", "classifier.", "head.")
# ResNet stages from the top, as torchvision's `_resnet_fpn_extractor` counts trainable layers
RESNET_STAGES = ("layer4", "layer3", "layer2", "layer1", "conv1")
MAX_LISTED = 10


@dataclass(frozen=True)
class WeightsFile:
    """A resolved `model.pretrained`: where its file is, and what identifies it."""
    setting: str          # "imagenet" or the path as given
    path: Path
    enum: str | None      # the torchvision weights enum (imagenet)
    url: str | None

    @property
    def identity(self) -> dict:
        """What joins a run's identity: the file's name and its sha256."""
        return {"source": IMAGENET if self.enum else "file", "file": self.path.name, "sha256": file_sha256(self.path)}


def is_random(pretrained) -> bool:
    return pretrained is None or str(pretrained).lower() in ("", "none", "null")


def torchvision_weights(enum_name: str):
    """The torchvision weights enum member named like `ResNet50_Weights.IMAGENET1K_V1`."""
    from torchvision.models import get_weight
    try:
        return get_weight(enum_name)
    except (ValueError, KeyError, AttributeError) as err:
        raise UserError(f"model.imagenet_weights={enum_name!r} is not a torchvision weights enum "
                        f"(e.g. ResNet50_Weights.IMAGENET1K_V1): {err}") from None


def hub_file(weights) -> Path:
    """Where torchvision's loader keeps (and looks for) a weights enum's file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def resolve(pretrained, imagenet_weights: str | None, model_name: str = "this model") -> WeightsFile | None:
    """`model.pretrained` as a file on disk (None for random initialisation). `imagenet`
    downloads through torchvision when the file is not cached; where that fails, one line
    names the file, its folder and its URL."""
    if is_random(pretrained):
        return None
    setting = str(pretrained)
    if setting.lower() == IMAGENET:
        if not imagenet_weights:
            raise UserError(f"model.pretrained=imagenet: {model_name} has no ImageNet weights "
                            "(model.imagenet_weights is null); use model.pretrained=null or a path to a state dict")
        weights = torchvision_weights(str(imagenet_weights))
        path = hub_file(weights)
        if not path.is_file():
            # torch's "Downloading: ..." line (stdout or stderr, by version) is said after a
            # download, and not at all before a failure, whose one line names the URL
            said, warned = io.StringIO(), io.StringIO()
            try:  # torchvision's own loader: downloads into the hub cache and checks the hash
                with contextlib.redirect_stdout(said), contextlib.redirect_stderr(warned):
                    weights.get_state_dict(progress=False, check_hash=True)
                sys.stdout.write(said.getvalue())
                sys.stderr.write(warned.getvalue())
            except (urllib.error.URLError, OSError, RuntimeError) as err:
                reason = str(getattr(err, "reason", err)).splitlines()[0]
                raise UserError(f"model.pretrained=imagenet needs {path.name} in {path.parent} (absent, and the "
                                f"download failed: {reason}); on a machine with network fetch {weights.url} and "
                                f"copy it there, or set TORCH_HOME to a folder whose hub/checkpoints holds it") from None
        return WeightsFile(IMAGENET, path, str(imagenet_weights), weights.url)
    path = Path(setting).expanduser()
    if not path.is_file():
        raise UserError(f"model.pretrained={setting}: no such file (expected null, imagenet or a .pth / .pt "
                        "state dict)")
    return WeightsFile(setting, path.resolve(), None, None)


_SHA_CACHE: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached per (path, size, mtime) within the process."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def weights_identity(model_cfg) -> dict | None:
    """The identity of a model config's weights (file name and sha256), None for random
    initialisation; resolving it fetches or refuses the file before anything is written."""
    found = resolve(model_cfg.get("pretrained"), model_cfg.get("imagenet_weights"),
                    str(model_cfg.get("arch", model_cfg.get("_target_", "this model"))))
    return found.identity if found is not None else None


def read_state_dict(found: WeightsFile) -> dict[str, torch.Tensor]:
    """The file's tensors: a bare state dict or a checkpoint's `state_dict` / `model` entry,
    with a `module.` prefix (DataParallel / DDP) stripped."""
    try:
        state = torch.load(found.path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"model.pretrained: cannot read {found.path} as a torch state dict: "
                        f"{str(err).splitlines()[0]}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"model.pretrained: {found.path} holds no state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _listed(keys) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


def load_matching(found: WeightsFile, targets: dict[str, nn.Module], strict: bool = True) -> str:
    """Load `found` into the target it matches best by key: `targets` maps a description
    ("whole model", "backbone", ...) to a module. For the "backbone", a classification head's
    keys (`fc.`, `classifier.`) are left out on both sides, and a first key component of the
    file (`features.`) may be stripped. `num_batches_tracked` never counts. The best target
    has the most keys of equal shape, then the fewest problems. With `strict`, any file key
    without a place, or any target key the file lacks, is an error naming them; a shape
    mismatch always is. Returns the description of the target loaded."""
    def usable(items):
        return {k: v for k, v in items if not k.endswith("num_batches_tracked")}

    state = usable(read_state_dict(found).items())
    options = []
    for name, module in targets.items():
        own, candidates = usable(module.state_dict().items()), [state]
        if name == "backbone":
            own = {k: v for k, v in own.items() if not k.startswith(HEAD_PREFIXES)}
            body = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
            candidates = [body, {k.split(".", 1)[1]: v for k, v in body.items() if "." in k}]
        for candidate in candidates:
            common = own.keys() & candidate.keys()
            shapes = sorted(k for k in common if candidate[k].shape != own[k].shape)
            unexpected, missing = candidate.keys() - own.keys(), own.keys() - candidate.keys()
            options.append((len(common) - len(shapes), -(len(shapes) + len(unexpected) + len(missing)), name,
                            module, own, candidate, shapes, unexpected, missing))
    matched, _, name, module, own, candidate, shapes, unexpected, missing = max(options, key=lambda o: o[:2])
    expected = "; ".join(f"{n}: keys like {', '.join(list(m.state_dict())[:2])}" for n, m in targets.items())
    if matched == 0:
        raise UserError(f"model.pretrained: no key of {found.path.name} fits this model (the file's keys are like "
                        f"{_listed(list(state)[:3])}; expected the state dict of one of: {expected})")
    if shapes:
        raise UserError(f"model.pretrained: {found.path.name} has other shapes than this model's {name} "
                        f"(file vs model): " + ", ".join(f"{k} {tuple(candidate[k].shape)} vs {tuple(own[k].shape)}"
                                                        for k in shapes[:MAX_LISTED]))
    if strict and (unexpected or missing):
        parts = [f"{len(unexpected)} key(s) of the file have no place in the {name}: {_listed(unexpected)}"] if unexpected else []
        parts += [f"{len(missing)} key(s) of the {name} are not in the file: {_listed(missing)}"] if missing else []
        raise UserError(f"model.pretrained: {found.path.name} does not match this model's {name} ({'; '.join(parts)}); "
                        f"expected the state dict of one of: {expected}; model.pretrained_strict=false loads the "
                        "keys that match")
    module.load_state_dict({k: candidate[k] for k in own.keys() & candidate.keys()}, strict=False)
    return name


def frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Every `BatchNorm2d` under `module` replaced by a `FrozenBatchNorm2d` with its statistics
    and affine values (torchvision's detection builders use FrozenBatchNorm2d for pretrained
    backbones, MMDetection `norm_eval=True`). torchvision has no converter for an existing
    module, hence this one."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        replaced = frozen_batchnorm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


def freeze_resnet(resnet: nn.Module, trainable_layers: int, batchnorm: bool = True) -> nn.Module:
    """A torchvision-named ResNet (conv1, bn1, layer1..layer4) with frozen BatchNorm (unless
    `batchnorm` is false) and only its top `trainable_layers` stages (0..5) trainable, as
    torchvision's `_resnet_fpn_extractor` does (3 = MMDetection's `frozen_stages=1`)."""
    if not 0 <= int(trainable_layers) <= 5:
        raise UserError(f"model.trainable_layers must be in 0..5, got {trainable_layers}")
    frozen = list(RESNET_STAGES[int(trainable_layers):]) + (["bn1"] if int(trainable_layers) < 5 else [])
    if batchnorm:
        frozen_batchnorm(resnet)
    for name, parameter in resnet.named_parameters():  # other modules (a classifier's fc) stay trainable
        if any(name.startswith(stage + ".") for stage in frozen):
            parameter.requires_grad_(False)
    return resnet


def write_random_weights(enum_name: str, seed: int = 0, large: int = 4_000_000) -> dict[str, torch.Tensor]:
    """A randomly initialised torchvision model of the enum's architecture, its state dict
    saved under the enum's file name in the torch hub cache, where `imagenet` finds it: for
    the tests and for offline smoke runs (scripts/device_check.sh), never for results.
    Tensors of more than `large` elements (VGG's classifier, which SSD drops) are saved as an
    expanded scalar so the file stays small. Returns the state dict."""
    import torchvision

    architecture = enum_name.split(".")[0].removesuffix("_Weights").lower()  # ResNet50_Weights -> resnet50
    torch.manual_seed(seed)
    state = getattr(torchvision.models, architecture)().state_dict()
    state = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) if v.numel() > large else v for k, v in state.items()}
    path = hub_file(torchvision_weights(enum_name))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state
