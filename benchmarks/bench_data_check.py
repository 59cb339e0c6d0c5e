"""Time of the image check that runs before any training (alb.datasets.checks.check_images)
on a VOC-size folder: 16,551 generated JPEGs of VOC's typical 500 x 375 pixels.

    python benchmarks/bench_data_check.py               # 16,551 images (generated once, ~350 MB)
    python benchmarks/bench_data_check.py --images 2000 # a quick look

Measured in one run, on the same files:
- `full decode`: PIL decodes every image (what a check that opens each image costs, and
  the baseline of the ratios);
- `alb, first run`: header + end-marker check, no verdict cache (8 threads);
- `alb, first run, 1 thread`: the same on one thread;
- `alb, second run`: every verdict cached by (size, mtime): a stat per file.
With `--cold` (needs root) the first runs and the full decode are also measured after
dropping the OS page cache (`/proc/sys/vm/drop_caches`), as on a first run over data that
nothing has read yet; otherwise the files sit in the page cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _out import write_table  # benchmarks/_out.py: the table and its header, into benchmarks/out/

VOC_POOL = 16_551


def generate(folder: Path, n: int) -> list[Path]:
    """n JPEGs of 500 x 375 (a gradient + noise, ~20 KB each), written once and reused.
    The noise field is drawn once and shifted per image (drawing it costs more than the
    JPEG encoding)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    noise = rng.normal(0, 6, (375, 1000, 1)).astype(np.float32)
    paths = []
    for i in range(n):
        path = folder / f"{i:06d}.jpg"
        paths.append(path)
        if path.is_file():
            continue
        base = (xx * rng.uniform(0.1, 0.5) + yy * rng.uniform(0.1, 0.5))[..., None] + rng.uniform(0, 120, 3)
        shift = int(rng.integers(0, 500))
        image = np.clip(base + noise[:, shift:shift + 500], 0, 255).astype(np.uint8)
        Image.fromarray(image).save(path, quality=85)
        if i % 2000 == 0:
            print(f"generating {i}/{n}", file=sys.stderr)
    return paths


def full_decode(paths: list[Path]) -> None:
    for path in paths:
        with Image.open(path) as image:
            image.load()


def timed(fn, cold: bool = False) -> float:
    if cold:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=VOC_POOL)
    parser.add_argument("--cold", action="store_true", help="also measure after dropping the page cache (root)")
    parser.add_argument("--folder", default=None, help="where the generated JPEGs are kept "
                                                       "(default: $ALB_CACHE_DIR/bench_images)")
    args = parser.parse_args()
    from alb.config import cache_root
    from alb.datasets import checks
    folder = Path(args.folder) if args.folder else cache_root() / "bench_images"
    paths = generate(folder, args.images)
    megabytes = sum(p.stat().st_size for p in paths) / 2**20
    verdicts = Path(tempfile.mkdtemp(prefix="alb-bench-verdicts-"))
    os.environ["ALB_CACHE_DIR"] = str(verdicts)  # a fresh verdict cache: the first run reads every file
    def first_run(threads: int, cold: bool) -> float:
        shutil.rmtree(verdicts / "image_checks", ignore_errors=True)
        checks.THREADS = threads
        return timed(lambda: checks.check_images(paths), cold)

    try:
        rows = [("full decode (PIL load), 1 thread", timed(lambda: full_decode(paths)))]
        rows += [(f"alb, first run, {t} thread{'s' * (t > 1)}", first_run(t, False)) for t in (1, 8)]
        rows.append(("alb, second run (cached verdicts)", timed(lambda: checks.check_images(paths))))
        if args.cold:
            rows.append(("full decode, cold page cache", timed(lambda: full_decode(paths), cold=True)))
            rows += [(f"alb, first run, {t} thread{'s' * (t > 1)}, cold page cache", first_run(t, True))
                     for t in (1, 8)]
    finally:
        shutil.rmtree(verdicts, ignore_errors=True)
    baseline = rows[0][1]
    lines = [f"{len(paths)} JPEGs, 500 x 375, {megabytes:.0f} MB, {os.cpu_count()} CPUs", "",
             "| check | seconds | ms per image | x faster than full decode |", "|---|---|---|---|"]
    lines += [f"| {name} | {seconds:.2f} | {1000 * seconds / len(paths):.3f} | {baseline / seconds:.1f}x |"
              for name, seconds in rows]
    write_table("data_check", lines)


if __name__ == "__main__":
    main()
