"""The seam: prediction arrays handed to strategies (docs/concepts.md, "The seam").

Classification fields for n images: `probs (n, C)`, `embedding (n, D)` (penultimate layer),
`mc_probs (T, n, C)` (MC-dropout passes), `pred_loss (n,)` (learning-loss head).

Detection fields for n images, detections after NMS and the score threshold stored flat:
image i owns box rows `offsets[i]:offsets[i+1]` (`offsets (n+1,)`, always present with a
box field). Box fields: `boxes (M, 4)` xyxy pixels, `scores (M,)`, `labels (M,)`,
`box_probs (M, C')` (`meta["probs_kind"]`: "softmax" -> C' = C + 1, background last, rows
sum to 1; "sigmoid" -> C' = C independent scores), `box_features (M, D)`. Image field:
`image_features (n, D)`. The same fields for the horizontally flipped image carry the
prefix `flip_` (boxes mapped back to the unflipped frame; offsets in `flip_offsets`), and for
CALD's other views `cutout_` (up to two rectangles blanked beside the detections), `scale_`
(the image at 0.8x) and `rotate_` (turned 5 degrees, canvas expanded), each mapped back to the
original frame (a rotated box as the axis-aligned box around its corners).
Images with no detection are normal: offsets[i] == offsets[i+1]. `mc_box_probs (T, M, C')`
holds, for every box row, the class vector of its matched detection in each of T MC-dropout
passes or ensemble members (the background row where a pass detected nothing there).
`pred_loss (n,)`: the learning-loss module's predicted detector loss per image.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CLASSIFICATION_FIELDS = ("probs", "embedding", "mc_probs", "pred_loss")
BOX_FIELDS = ("boxes", "scores", "labels", "box_probs", "box_features")
FLIP = "flip_"
VIEWS = ("flip", "cutout", "scale", "rotate")  # the augmented views a detector adapter computes
VIEW_PREFIXES = tuple(f"{v}_" for v in VIEWS)
HOOK_FIELDS = ("mc_box_probs", "pred_loss")  # detection fields that need a training hook (dropout, learning loss)
# `label_counts (N, C)`: the annotated objects of each class per image, for labelled images
# (their labels are known: CALD's labelled class distribution counts them)
DETECTION_FIELDS = (*BOX_FIELDS, "image_features", *(p + f for p in VIEW_PREFIXES for f in BOX_FIELDS), *HOOK_FIELDS,
                    "label_counts")
OFFSETS_FIELDS = ("offsets", *(p + "offsets" for p in VIEW_PREFIXES))


def view_of(name: str) -> str | None:
    """The view a field belongs to ("flip", "cutout", ...), None for the image as it is."""
    return next((p[:-1] for p in VIEW_PREFIXES if name.startswith(p)), None)
_ROW_AXIS = {"mc_probs": 1, "mc_box_probs": 1}


def is_box_field(name: str) -> bool:
    """Whether field `name` has one row per box (and so comes with its offsets)."""
    view = view_of(name)
    return (name.removeprefix(f"{view}_") if view else name) in BOX_FIELDS or name == "mc_box_probs"


def offsets_field(name: str) -> str:
    """The offsets array that indexes box field `name`."""
    view = view_of(name)
    return f"{view}_offsets" if view else "offsets"


@dataclass(frozen=True)
class Records(Mapping):
    """Arrays for n pool images, keyed by field; `ids[i]` is image i's stable sample id.
    `meta` describes the arrays (e.g. `probs_kind`, `num_classes`)."""

    ids: np.ndarray
    fields: Mapping[str, np.ndarray] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name, array in self.fields.items():
            if name in OFFSETS_FIELDS:
                if len(array) != n + 1 or array[0] != 0 or np.any(np.diff(array) < 0):
                    raise ValueError(f"{name} must be non-decreasing, start at 0 and have n + 1 = {n + 1} entries")
                continue
            if is_box_field(name):
                offsets = self.fields.get(offsets_field(name))
                if offsets is None:
                    raise ValueError(f"box field {name!r} needs {offsets_field(name)!r}")
                rows = array.shape[_ROW_AXIS.get(name, 0)]
                if rows != offsets[-1]:
                    raise ValueError(f"box field {name!r} has {rows} rows, offsets say {offsets[-1]}")
                continue
            rows = array.shape[_ROW_AXIS.get(name, 0)]
            if rows != n:
                raise ValueError(f"field {name!r} has {rows} rows, expected {n}")

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.fields:
            raise KeyError(f"field {name!r} was not computed; a strategy must list it in `fields` "
                           f"(available: {sorted(self.fields)})")
        return self.fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    @property
    def n(self) -> int:
        return len(self.ids)

    def box_counts(self, flipped: bool = False) -> np.ndarray:
        """Detections per image (n,)."""
        return np.diff(self[FLIP + "offsets" if flipped else "offsets"])

    def box_owner(self, flipped: bool = False) -> np.ndarray:
        """The image index of every box row (M,)."""
        return np.repeat(np.arange(self.n), self.box_counts(flipped))


def keep_boxes(records: Records, keep: np.ndarray) -> Records:
    """The same images with only the box rows where `keep (M,)` is true (unflipped fields);
    offsets recomputed. Image fields are unchanged."""
    keep = np.asarray(keep, dtype=bool)
    kept_before = np.concatenate([[0], np.cumsum(keep)])  # kept rows before each box row
    counts = np.diff(kept_before[records["offsets"]])
    fields = {name: (array[keep] if name in BOX_FIELDS else array[:, keep] if name == "mc_box_probs" else array)
              for name, array in records.fields.items()}
    fields["offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Records(records.ids, fields, records.meta)


def concat_parts(parts: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The fields of several consecutive groups of images joined into one: rows along each
    field's image (or box) axis, offsets shifted by the boxes before them. Every part has the
    same fields; a part may hold no image."""
    out = {}
    for name in parts[0]:
        arrays = [part[name] for part in parts]
        if name in OFFSETS_FIELDS:
            starts = np.cumsum([0, *(a[-1] for a in arrays[:-1])])
            out[name] = np.concatenate([arrays[0][:1], *(a[1:] + s for a, s in zip(arrays, starts))])
        else:
            out[name] = np.concatenate(arrays, axis=_ROW_AXIS.get(name, 0))
    return out


def concat(first: Records, second: Records, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`fields` of `first`'s images followed by `second`'s, box fields with joined offsets."""
    names = {*fields, *(offsets_field(f) for f in fields if is_box_field(f))}
    return concat_parts([{n: first[n] for n in names}, {n: second[n] for n in names}])
