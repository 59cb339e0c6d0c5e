"""`shapes`: the embedded default detection dataset. A seeded generator writes a small
VOC-layout dataset (JPEG images, XML annotations, ImageSets/Main lists) into a cache folder
and the VOC reader reads it back, so every quick start exercises the VOC reader.

Each image has a noisy colour gradient, clutter (lines and dots that are not objects) and
1-`max_objects` shapes of `CLASSES` with random size, colour and rotation; later shapes may
occlude earlier ones. An object smaller than `difficult_size` px or with less than half of
it visible is marked difficult (ignored by the metric, as in VOC).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

from alb.config import cache_root
from alb.datasets.detection import DetectionData
from alb.datasets.voc import read_voc
from alb.errors import UserError

CLASSES = ("circle", "square", "triangle", "cross")
FOLDER = "SHAPES"


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif kind == "triangle":
        corners = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    else:  # cross: a plus sign of arm width 0.36 r
        w = 0.36
        corners = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w),
                   (-1, -w), (-w, -w)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in corners]


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx, cy, r, angle, fill) -> None:
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=fill)


def render(rng: np.random.Generator, size: int, max_objects: int, min_size: int, max_size: int,
           difficult_size: int) -> tuple[Image.Image, list[dict]]:
    """One image and its objects [{name, box (x1, y1, x2, y2) 1-based inclusive, difficult}]."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
    background = c0 + (c1 - c0) * (t - t.min()) / max(np.ptp(t), 1e-6)
    background += rng.normal(0, 12, background.shape)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 7)):  # clutter: lines and dots
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.line([tuple(rng.uniform(0, size, 2)), tuple(rng.uniform(0, size, 2))], fill=colour,
                      width=int(rng.integers(1, 3)))
        else:
            x, y, r = *rng.uniform(0, size, 2), rng.uniform(1.5, 4)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    masks, objects = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        kind = CLASSES[int(rng.integers(len(CLASSES)))]
        r = rng.uniform(min_size, max_size) / 2
        cx, cy = rng.uniform(r * 0.6, size - r * 0.6, 2)
        angle = rng.uniform(0, 2 * math.pi) if kind != "circle" else 0.0
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        mask_image = Image.new("L", (size, size), 0)
        _draw_shape(ImageDraw.Draw(mask_image), kind, cx, cy, r, angle, 255)
        mask = np.asarray(mask_image) > 0
        if not mask.any():
            continue
        for earlier in masks:
            earlier &= ~mask  # the new shape occludes what it covers
        masks.append(mask)
        _draw_shape(draw, kind, cx, cy, r, angle, colour)
        objects.append({"name": kind, "full": int(mask.sum())})
    for obj, mask in zip(objects, masks):
        ys, xs = np.nonzero(mask)
        visible = mask.sum() / obj["full"]
        if not len(xs):
            obj["box"] = None
            continue
        obj["box"] = (int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1)
        extent = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
        obj["difficult"] = bool(extent < difficult_size or visible < 0.5)
    return image, [o for o in objects if o["box"] is not None]


def _annotation_xml(stem: str, size: int, objects: list[dict]) -> str:
    parts = [f"<annotation>\n  <folder>{FOLDER}</folder>\n  <filename>{stem}.jpg</filename>\n"
             f"  <size><width>{size}</width><height>{size}</height><depth>3</depth></size>\n"]
    for o in objects:
        x1, y1, x2, y2 = o["box"]
        parts.append(f"  <object>\n    <name>{escape(o['name'])}</name>\n    <difficult>{int(o['difficult'])}"
                     f"</difficult>\n    <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                     f"<ymax>{y2}</ymax></bndbox>\n  </object>\n")
    parts.append("</annotation>\n")
    return "".join(parts)


def generate_shapes(folder: Path, n_pool: int, n_test: int, image_size: int, seed: int, max_objects: int,
                    min_size: int, max_size: int, difficult_size: int) -> None:
    """Write the dataset into `folder` (a VOCdevkit). Written to a temporary folder and
    renamed at the end, so a crash never leaves a half-written dataset."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        base = tmp / FOLDER
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (base / sub).mkdir(parents=True)
        rng = np.random.default_rng(seed)
        for split, count, offset in (("trainval", n_pool, 0), ("test", n_test, n_pool)):
            stems = [f"{offset + i:06d}" for i in range(count)]
            for stem in stems:
                image, objects = render(rng, image_size, max_objects, min_size, max_size, difficult_size)
                image.save(base / "JPEGImages" / f"{stem}.jpg", quality=92)
                (base / "Annotations" / f"{stem}.xml").write_text(_annotation_xml(stem, image_size, objects))
            (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / FOLDER).is_dir():  # another process may have won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_shapes(cache_dir: str | None = None, n_pool: int = 600, n_test: int = 200, image_size: int = 128,
                seed: int = 0, max_objects: int = 5, min_size: int = 10, max_size: int = 48,
                difficult_size: int = 10, evaluation: str = "voc07") -> DetectionData:
    """Generate (once per parameter set) and read the shapes dataset."""
    if n_pool < 1 or n_test < 1:
        raise UserError(f"shapes needs n_pool >= 1 and n_test >= 1, got {n_pool} and {n_test}")
    if not 0 < min_size <= max_size <= image_size:
        raise UserError(f"shapes needs 0 < min_size <= max_size <= image_size, got {min_size}, {max_size}, {image_size}")
    params = dict(n_pool=n_pool, n_test=n_test, image_size=image_size, seed=seed, max_objects=max_objects,
                  min_size=min_size, max_size=max_size, difficult_size=difficult_size, version=1)
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    folder = (Path(cache_dir).expanduser() if cache_dir else cache_root()) / f"shapes-{digest}"
    if not (folder / FOLDER / "ImageSets" / "Main" / "test.txt").is_file():
        generate_shapes(folder, **{k: v for k, v in params.items() if k != "version"})
    return read_voc(str(folder), pool_sets=[(FOLDER, "trainval")], test_sets=[(FOLDER, "test")], classes=CLASSES,
                    evaluation=evaluation, name="shapes", cache=True)
