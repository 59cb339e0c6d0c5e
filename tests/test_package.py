"""A real install (`pip install .`, not editable) runs from any folder: the configs, presets
and papers' numbers ship inside the package."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """alb installed by pip from the checkout into a folder of its own (its dependencies are
    this environment's), so the import below finds that copy and not the editable one."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-compile",
                             "--quiet", "--target", str(target), str(REPO)],
                            capture_output=True, text=True, env={**os.environ, "TMPDIR": str(build)})
    assert result.returncode == 0, result.stderr[-2000:]
    return target


def run_python(code: str, site, cwd):
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)


def test_an_installed_alb_runs_and_reports_from_another_folder(installed, tmp_path):
    assert not (installed / "tests").exists() and (installed / "alb" / "conf" / "config.yaml").is_file()
    assert (installed / "alb" / "experiments" / "experiment" / "ppal" / "reported.csv").is_file()
    code = ("import alb, alb.config as c; print(alb.__file__); print(c.CONFIG_DIR); "
            "from alb.cli import main; import sys; sys.argv = ['alb', 'run', 'strategy=random', 'trainer.epochs=1', "
            "'trainer.min_steps=0', 'protocol.initial=30', 'protocol.step=20', 'protocol.cycles=1', 'progress=false']; "
            "main()")
    result = run_python(code, installed, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = result.stdout.splitlines()[:2]
    assert first.startswith(str(installed)) and second.startswith(str(installed))
    assert (tmp_path / "results" / "default" / "random" / "seed_0" / "cycles.csv").is_file()
    listed = run_python("import sys; from alb.cli import main; sys.argv = ['alb', 'list', 'experiment']; main()",
                        installed, tmp_path)
    assert listed.returncode == 0 and "ppal/voc" in listed.stdout and "reality_check/cifar10" in listed.stdout
