"""Selection time and peak memory of kcenter_greedy, BADGE and NORIS-Sum on synthetic
embeddings, each beside a naive implementation (full N x N matrix / materialised gradient
embeddings) measured in the same run where it fits in memory.

`kcenter_plain`: alb's k-center greedy against a warm plain torch loop on the same device
(CUDA when present), in the same process: per pick one matrix-vector product, a minimum and an
argmax; both warmed up first (CUDA context, cuBLAS handles). Target: alb <= 1.5x the loop.

    make bench                      # pool sizes 10k and 50k, D=512, budget 2000, C=10
    python benchmarks/bench_select.py --sizes 2000 --budget 200   # a quick look

Each measurement runs in its own process so that peak RSS (ru_maxrss) is its own; the
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

NAIVE_LIMIT_BYTES = 6 * 2**30  # skip a naive version whose main array would exceed this


def inputs(n: int, dim: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, dim)).astype(np.float32)
    probs = rng.dirichlet(np.ones(classes), size=n).astype(np.float32)
    labelled = np.zeros(n, dtype=bool)
    labelled[rng.choice(n, n // 50, replace=False)] = True
    return features, probs, labelled


def naive_kcenter(features, labelled, budget):
    import torch
    x = torch.from_numpy(features)
    dist = torch.cdist(x, x)  # (N, N)
    min_dist = dist[:, torch.from_numpy(labelled)].min(dim=1).values
    min_dist[torch.from_numpy(labelled)] = -1
    picks = []
    for _ in range(budget):
        i = int(torch.argmax(min_dist))
        picks.append(i)
        min_dist = torch.minimum(min_dist, dist[:, i])
        min_dist[i] = -1
    return picks


def naive_badge(features, probs, budget, rng):
    from alb.select import kmeanspp_seeding
    onehot = np.eye(probs.shape[1], dtype=np.float32)[probs.argmax(1)]
    dense = ((probs - onehot)[:, :, None] * features[:, None, :]).reshape(len(probs), -1)  # (N, C*D)
    return kmeanspp_seeding(dense, budget, rng, first="max_norm")


def naive_noris(scores, features, budget, alpha=0.5):
    import torch
    x = torch.from_numpy(features)
    dist = torch.cdist(x, x)
    lam = (alpha * float(dist.max())) ** 2 / np.pi
    sim = torch.exp(-dist.pow_(2) / lam)  # (N, N), in place over the distances
    sigma = torch.from_numpy(scores).clone()
    available = torch.ones(len(sigma), dtype=torch.bool)
    picks = []
    for _ in range(budget):
        i = int(torch.argmax(torch.where(available, sigma, torch.tensor(-np.inf))))
        picks.append(i)
        available[i] = False
        sigma -= sim[:, i] * sigma[i].clone()
    return picks


def plain_kcenter(x, labelled, budget: int) -> list[int]:
    """The plainest torch k-center greedy on x's device: one gemv, a minimum, an argmax per pick."""
    import torch
    x_sq = (x * x).sum(1)
    centres = x[labelled]
    min_dist = torch.full((len(x),), float("inf"), device=x.device)
    for start in range(0, len(centres), 1024):
        c = centres[start:start + 1024]
        d = x_sq[:, None] + (c * c).sum(1)[None, :] - 2.0 * (x @ c.T)
        min_dist = torch.minimum(min_dist, d.min(dim=1).values)
    min_dist[labelled] = -1.0
    picks = []
    for _ in range(budget):
        i = int(torch.argmax(min_dist))
        picks.append(i)
        min_dist = torch.minimum(min_dist, x_sq + x_sq[i] - 2.0 * (x @ x[i]))
        min_dist[i] = -1.0
    return picks


def kcenter_against_plain(n: int, dim: int, classes: int, budget: int) -> dict:
    """(alb seconds, plain loop seconds) in one process, both warm, on the default device."""
    import torch

    from alb.select import kcenter_greedy
    from alb.select._backend import default_device
    device = default_device()
    features, _, labelled = inputs(n, dim, classes)
    x, mask = torch.from_numpy(features).to(device), torch.from_numpy(labelled).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
    plain_kcenter(x, mask, 20), kcenter_greedy(features, labelled, 20)  # warm-up
    sync()
    start = time.perf_counter()
    plain = plain_kcenter(x, mask, budget)
    sync()
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = kcenter_greedy(features, labelled, budget)
    sync()
    return {"method": "kcenter_plain", "n": n, "device": device.type, "alb_s": time.perf_counter() - start,
            "plain_s": plain_s, "same": [int(i) for i in ours] == plain}


def measure(method: str, impl: str, n: int, dim: int, classes: int, budget: int) -> dict:
    import torch
    torch.set_num_threads(torch.get_num_threads())
    from alb.select import badge_seeding, kcenter_greedy, noris_greedy
    features, probs, labelled = inputs(n, dim, classes)
    unlabelled = ~labelled
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    if method == "kcenter_greedy":
        picks = kcenter_greedy(features, labelled, budget) if impl == "alb" else naive_kcenter(features, labelled, budget)
    elif method == "kcenter_bf16":  # "naive" here is the exact fp32 run, to compare the picks
        picks = kcenter_greedy(features, labelled, budget, precision="bf16" if impl == "alb" else "fp32")
    elif method == "badge":
        f, p = features[unlabelled], probs[unlabelled]
        picks = badge_seeding(p, f, budget, rng) if impl == "alb" else naive_badge(f, p, budget, rng)
    else:
        f, s = features[unlabelled], 1.0 - probs[unlabelled].max(1)
        picks = noris_greedy(s, f, budget) if impl == "alb" else naive_noris(s, f, budget)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": method, "impl": impl, "n": n, "seconds": seconds, "peak_mib": max(peak - before, 0) / 1024,
            "picks": [int(i) for i in list(picks)]}


def naive_bytes(method: str, n: int, dim: int, classes: int) -> int:
    return {"badge": n * dim * classes * 4, "kcenter_bf16": 0}.get(method, n * n * 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--methods", nargs="+",
                        default=["kcenter_greedy", "kcenter_bf16", "badge", "noris_sum", "kcenter_plain"])
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, impl, n = args.one
        if method == "kcenter_plain":
            print(json.dumps(kcenter_against_plain(int(n), args.dim, args.classes, args.budget)))
        else:
            print(json.dumps(measure(method, impl, int(n), args.dim, args.classes, args.budget)))
        return
    rows, plain_rows = [], []
    for n in args.sizes:
        if "kcenter_plain" in args.methods:
            out = subprocess.run([sys.executable, __file__, "--one", "kcenter_plain", "alb", str(n), "--dim",
                                  str(args.dim), "--classes", str(args.classes), "--budget", str(args.budget)],
                                 capture_output=True, text=True, check=True)
            plain_rows.append(json.loads(out.stdout))
        for method in (m for m in args.methods if m != "kcenter_plain"):
            for impl in ("naive", "alb"):
                if impl == "naive" and naive_bytes(method, n, args.dim, args.classes) > NAIVE_LIMIT_BYTES:
                    rows.append({"method": method, "impl": impl, "n": n, "seconds": None, "peak_mib": None})
                    continue
                out = subprocess.run([sys.executable, __file__, "--one", method, impl, str(n), "--dim", str(args.dim),
                                      "--classes", str(args.classes), "--budget", str(args.budget)],
                                     capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout))
                print(f"{method:15s} {impl:6s} n={n:6d} {rows[-1]['seconds']:8.2f} s "
                      f"{rows[-1]['peak_mib']:9.1f} MiB", file=sys.stderr)
    lines = [f"D={args.dim}, C={args.classes}, budget={args.budget}; peak = extra RSS over the inputs; "
             "kcenter_bf16: 'alb' is precision=bf16, 'naive' the exact fp32 run", "",
             "| method | N | alb s | alb peak MiB | naive s | naive peak MiB | speed-up | same picks |",
             "|---|---|---|---|---|---|---|---|"]
    for n in args.sizes:
        for method in (m for m in args.methods if m != "kcenter_plain"):
            fast = next(r for r in rows if r["method"] == method and r["n"] == n and r["impl"] == "alb")
            slow = next(r for r in rows if r["method"] == method and r["n"] == n and r["impl"] == "naive")
            if slow["seconds"] is None:
                naive, ratio, same = ("does not fit (> 6 GiB)", "-"), "-", "-"
            else:
                naive, ratio = (f"{slow['seconds']:.2f}", f"{slow['peak_mib']:.0f}"), f"{slow['seconds'] / fast['seconds']:.1f}x"
                prefix = next((k for k, (a, b) in enumerate(zip(fast["picks"], slow["picks"])) if a != b), len(fast["picks"]))
                overlap = len(set(fast["picks"]) & set(slow["picks"]))
                same = "yes" if prefix == len(fast["picks"]) else f"first {prefix}, {overlap} in common"
            lines.append(f"| {method} | {n} | {fast['seconds']:.2f} | {fast['peak_mib']:.0f} | {naive[0]} | "
                         f"{naive[1] if slow['seconds'] is not None else '-'} | {ratio} | {same} |")
    if plain_rows:
        lines += ["", "k-center greedy against a warm plain torch loop (one gemv, minimum, argmax per pick), same "
                  "process, same device (target: ratio <= 1.5):", "",
                  "| N | device | alb s | plain loop s | alb / plain | same picks |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['n']} | {r['device']} | {r['alb_s']:.2f} | {r['plain_s']:.2f} | "
                  f"{r['alb_s'] / r['plain_s']:.2f} | {'yes' if r['same'] else 'no'} |" for r in plain_rows]
    import torch
    write_table("select", lines, "" if not torch.cuda.is_available() else "_cuda")


if __name__ == "__main__":
    main()
