"""A test-only strategy: entropy that, when ALB_TEST_SELECT_MARKER names a file, creates it
and sleeps inside `select`, so a test can SIGKILL a run in the middle of a selection.
ALB_TEST_SELECT_MEASURE, when set, limits that to the strategy with this `measure` (one job of
a sweep)."""

import os
import time
from pathlib import Path

from alb.strategies.uncertainty import UncertaintySampling


class SlowSelect(UncertaintySampling):
    def select(self, unlabelled, labelled, budget, rng):
        marker = os.environ.get("ALB_TEST_SELECT_MARKER")
        only = os.environ.get("ALB_TEST_SELECT_MEASURE")
        if marker and (not only or only == self.measure):
            Path(marker).touch()
            time.sleep(120)
        return super().select(unlabelled, labelled, budget, rng)
