"""`alb run` that signals its own process group once, in a chosen phase, as Slurm, `timeout`
and Ctrl-C do (the DataLoader workers get the signal too):

    python tests/_group_signal.py <phase> <SIGNAL> <n> -- <alb run overrides>

phase: training | pool inference | evaluation | selection. The signal goes out when the n-th
run of the phase (1-based) has its first batch in hand (workers alive), or at the first pick
of a k-center selection. The run is alb's own `main()`, so the exit code and the printed line are the CLI's.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    phase, name, occurrence = sys.argv[1], sys.argv[2], int(sys.argv[3])
    overrides = sys.argv[sys.argv.index("--") + 1:]
    sig = getattr(signal, name)
    sent = {"done": False}
    seen = {"training": 0, "pool inference": 0, "evaluation": 0}

    def fire() -> None:
        if not sent["done"]:
            sent["done"] = True
            os.killpg(os.getpgrp(), sig)

    from alb import machine
    original = machine.batches

    def batches(data, label, check_stop=True):
        kind = "training" if label.startswith("train cycle") else label
        if kind in seen:
            seen[kind] += 1
        wanted = kind == phase and seen[kind] == occurrence
        for k, batch in enumerate(original(data, label, check_stop)):
            if wanted and k == 0:
                fire()
            yield batch

    machine.batches = batches
    if phase == "selection":
        import alb.select.kcenter as kcenter
        real_check = kcenter.check

        def check(where: str) -> None:
            fire()
            real_check(where)

        kcenter.check = check
    sys.argv = ["alb", "run", *overrides]
    from alb.cli import main as alb_main
    alb_main()


if __name__ == "__main__":
    main()
