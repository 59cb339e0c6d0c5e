"""Detection selection at realistic size, on synthetic detector outputs, each beside a naive
full-matrix version measured in the same run where that fits in memory (6 GiB).

    python benchmarks/bench_select_det.py                 # the sizes of the docs' table
    python benchmarks/bench_select_det.py --scale 0.1     # a quick look at a tenth of the size

- noris_det: NORIS-Sum on a VOC-size pool (16,551 images, Poisson(2.5) detections, D=256,
  budget 1,655), Eq. 10 object distances, exact d_max included. Naive: the 16,551^2
  distance matrix, then the greedy on its columns.
- ppal: CCMS + k-center + 100 k-medoid rounds on a COCO-size candidate pool (4 x 2,365
  images, Poisson(7) detections over 80 classes, D=256, budget 2,365). Naive: the k-medoid
  update as a Python loop over clusters (the CCMS object-pair matrix, 66k^2, does not fit).
- uwe_det: UWE on the VOC-size pool (20 classes, D=256, 5% labelled, budget 1,655), sparse
  class blocks (made dense on a GPU). Naive: the dense N x K*D embedding and dense k-center greedy.
- cdal: CDAL's contextual diversity on the VOC-size pool (5% labelled, budget 1,655): k-center
  on the symmetric-KL distance, one row per pick. Naive: the N^2 distance matrix first.

Each measurement runs in its own process so that its peak RSS (ru_maxrss) is its own; the
reported memory is the peak minus the RSS after the inputs were built.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from _out import write_table  # benchmarks/_out.py: the table and its header, into benchmarks/out/


def detections(n: int, mean_boxes: float, classes: int, dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(mean_boxes, n)
    m = int(counts.sum())
    probs = rng.dirichlet(np.ones(classes) * 0.3, size=m).astype(np.float32)
    return {"offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            "box_features": np.abs(rng.standard_normal((m, dim))).astype(np.float32),
            "image_features": np.abs(rng.standard_normal((n, dim))).astype(np.float32),
            "box_probs": probs, "labels": probs.argmax(1), "scores": probs.max(1)}


def run_noris(det, budget, naive):
    import torch
    from alb.select import ObjectDistances, noris_greedy
    scores = 1.0 - det["box_probs"].max(1)
    image_scores = np.zeros(len(det["offsets"]) - 1)
    np.maximum.at(image_scores, np.repeat(np.arange(len(image_scores)), np.diff(det["offsets"])), scores)
    distances = ObjectDistances(det["box_features"], det["offsets"], det["image_features"])
    if not naive:
        return noris_greedy(image_scores, distances, budget)
    n = len(image_scores)
    full = torch.cat([distances(np.arange(s, min(s + 512, n))) for s in range(0, n, 512)])  # (n, n)
    d_max = float(full.max())
    return noris_greedy(image_scores, lambda rows: full[np.asarray(rows)], budget, d_max=d_max)


def run_ppal(det, budget, naive):
    import torch
    from alb.select import ccms_similarity, kcenter_kmedoids
    n = len(det["offsets"]) - 1
    sim = ccms_similarity(det["box_features"], det["offsets"], det["labels"], det["scores"], np.arange(n))
    if not naive:
        return kcenter_kmedoids(sim, budget, 100)
    centres = kcenter_kmedoids(sim, budget, 0)  # the same k-center start, then a per-cluster loop
    s = torch.from_numpy(sim)
    for _ in range(100):
        assign = torch.argmax(s[:, centres], dim=1).numpy()
        assign[centres] = np.arange(budget)
        new = []
        for k in range(budget):
            members = np.flatnonzero(assign == k)
            sums = s[members][:, members].sum(1) - s[members, members]
            new.append(int(members[int(torch.argmax(sums))]))
        if new == list(centres):
            break
        centres = np.asarray(new)
    return centres


def run_uwe(det, budget, naive, classes):
    from alb.scoring import bvsb
    from alb.select import kcenter_greedy, uwe_image_embedding
    n = len(det["offsets"]) - 1
    labelled = np.zeros(n, bool)
    labelled[np.random.default_rng(1).choice(n, n // 20, replace=False)] = True
    u = bvsb(det["box_probs"])
    emb = uwe_image_embedding(det["box_features"], u, det["labels"], det["offsets"], classes, sparse=not naive)
    return kcenter_greedy(emb, labelled, budget)


def run_cdal(det, budget, naive, classes):
    import torch
    from alb.select import SymmetricKLDistances, cdal_contexts, kcenter_on_distances
    n = len(det["offsets"]) - 1
    labelled = np.zeros(n, bool)
    labelled[np.random.default_rng(1).choice(n, n // 20, replace=False)] = True
    contexts, present = cdal_contexts(det["box_probs"], det["labels"], det["offsets"], classes)
    distances = SymmetricKLDistances(contexts, present)
    if not naive:
        return kcenter_on_distances(distances, n, labelled, budget)
    full = torch.cat([torch.as_tensor(distances(np.arange(s, min(s + 512, n)))) for s in range(0, n, 512)])
    return kcenter_on_distances(lambda rows: full[torch.as_tensor(np.asarray(rows), device=full.device)], n,
                                labelled, budget)


SETUPS = {  # n images, mean boxes, classes, dim, budget
    "noris_det": (16_551, 2.5, 20, 256, 1_655),
    "ppal": (4 * 2_365, 7.0, 80, 256, 2_365),
    "uwe_det": (16_551, 2.5, 20, 256, 1_655),
    "cdal": (16_551, 2.5, 20, 256, 1_655),
}


def naive_bytes(method: str, n: int, classes: int, dim: int) -> int:
    return {"noris_det": n * n * 4, "ppal": n * n * 4 * 2, "uwe_det": n * classes * dim * 4, "cdal": n * n * 4}[method]


def measure(method: str, impl: str, scale: float) -> dict:
    import torch
    torch.set_num_threads(torch.get_num_threads())
    n, boxes, classes, dim, budget = SETUPS[method]
    n, budget = max(int(n * scale), 10), max(int(budget * scale), 2)
    det = detections(n, boxes, classes, dim)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    naive = impl == "naive"
    if method == "noris_det":
        picks = run_noris(det, budget, naive)
    elif method == "ppal":
        picks = run_ppal(det, budget, naive)
    elif method == "cdal":
        picks = run_cdal(det, budget, naive, classes)
    else:
        picks = run_uwe(det, budget, naive, classes)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": method, "impl": impl, "n": n, "boxes": int(det["offsets"][-1]), "seconds": seconds,
            "peak_mib": max(peak - before, 0) / 1024, "picks": [int(i) for i in picks]}


def agreement(a: list[int], b: list[int]) -> str:
    """'yes', or how far two pick lists agree (float32 round-off decides near-ties)."""
    if a == b:
        return "yes"
    prefix = next(k for k, (x, y) in enumerate(zip(a, b)) if x != y)
    return f"first {prefix} in order, {len(set(a) & set(b))} of {len(a)} in common"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the realistic sizes")
    parser.add_argument("--methods", nargs="+", default=list(SETUPS))
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.scale)))
        return
    rows = {}
    for method in args.methods:
        n, _, classes, dim, _ = SETUPS[method]
        for impl in ("naive", "alb"):
            if impl == "naive" and naive_bytes(method, int(n * args.scale), classes, dim) > 6 * 2**30:
                continue
            out = subprocess.run([sys.executable, __file__, "--one", method, impl, "--scale", str(args.scale)],
                                 capture_output=True, text=True, check=True)
            rows[method, impl] = json.loads(out.stdout)
            r = rows[method, impl]
            print(f"{method:10s} {impl:6s} n={r['n']:6d} boxes={r['boxes']:7d} {r['seconds']:8.2f} s "
                  f"{r['peak_mib']:9.1f} MiB", file=sys.stderr)
    lines = [f"scale {args.scale}; peak = extra RSS over the inputs", "",
             "| method | images | boxes | alb s | alb peak MiB | naive s | naive peak MiB | speed-up | same picks |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method in args.methods:
        fast, slow = rows[method, "alb"], rows.get((method, "naive"))
        naive = (f"{slow['seconds']:.2f} | {slow['peak_mib']:.0f} | {slow['seconds'] / fast['seconds']:.1f}x | "
                 f"{agreement(fast['picks'], slow['picks'])}") if slow else "does not fit | - | - | -"
        lines.append(f"| {method} | {fast['n']} | {fast['boxes']} | {fast['seconds']:.2f} | {fast['peak_mib']:.0f} "
                     f"| {naive} |")
    write_table("select_det", lines)


if __name__ == "__main__":
    main()
