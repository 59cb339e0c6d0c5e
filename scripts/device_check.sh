#!/usr/bin/env bash
# Run alb's CUDA paths on a GPU machine that has no network and ships its own torch.
#
#   bash scripts/device_check.sh wheels [DIR]   # on a machine with PyPI access: fetch the wheels the
#                                               # GPU machine lacks into DIR (default .whl) for Python 3.12
#   bash scripts/device_check.sh run [DIR]      # on the GPU machine, in the checkout, with DIR beside it
#
# `run` installs those wheels and alb itself with --no-deps (the machine's torch and torchvision stay),
# then with device=cuda, each step under its own time limit (about 5 minutes in all): the mission's
# command twice (same rows: deterministic=true), a SIGTERM to the whole process group during
# training with loader workers and the resumed run's rows, bench_train (loader vs PIL, alb vs a
# plain loop), bench_determinism (its cost per detector family), bench_select (k-center vs a warm
# plain loop), bench_select_det, bench_detectors (pool inference vs a plain forward), `alb calibrate`
# and a dry run with device-hours, and `pytest -m gpu`; it prints one table. Logs go to $OUT
# (default /tmp/alb-device-check). PRESETS="elezi/voc ..." adds one reduced cycle of those presets.
# A dry run without a GPU (it overwrites benchmarks/out/*.md: git checkout benchmarks/out after):
#   DEVICE=cpu PYTHON=.venv/bin/python CALIBRATE_PRESET=quickstart_det
#   BENCH_TRAIN_ARGS="--steps 3 --repeats 1 --images 50 --workers 2"
#   BENCH_DETERMINISM_ARGS="--models centernet_tiny --size 128 --batch 2 --steps 2 --repeats 1"
#   BENCH_SELECT_ARGS="--sizes 2000 --budget 50 --methods kcenter_greedy kcenter_plain" BENCH_SELECT_DET_ARGS="--scale 0.02"
#   BENCH_DETECTORS_ARGS="--models centernet_tiny --sizes 128 --repeats 1 --pool 8" bash scripts/device_check.sh run DIR
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mode=${1:-run}
WHEELS=${2:-.whl}
PY=${PYTHON:-python3}
PY_VERSION=${DEVICE_PYTHON_VERSION:-3.12}
# What the GPU machine lacked when last seen (NOTES.md), pinned as in pyproject.toml.
MISSING=(hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 faster-coco-eval==1.8.0 packaging markdown==3.11.3
         typer==0.29.2 pydantic==2.14.4 pydantic-core==2.50.5 typing-inspection annotated-types threadpoolctl)

if [ "$mode" = wheels ]; then
  mkdir -p "$WHEELS"
  for spec in "${MISSING[@]}"; do
    $PY -m pip download --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$WHEELS" "$spec" \
      || $PY -m pip wheel --no-deps -w "$WHEELS" "$spec" || exit 1   # antlr4 4.9.3 is an sdist: build its wheel here
  done
  ls -la "$WHEELS"
  exit 0
fi
[ "$mode" = run ] || { echo "usage: $0 wheels|run [DIR]" >&2; exit 2; }

OUT=${OUT:-/tmp/alb-device-check}
mkdir -p "$OUT"
export ALB_CACHE_DIR="$OUT/cache" PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu tries the script itself on a machine without a GPU
SITE="$OUT/site"
rows=()
row() { rows+=("| $1 | $2 | $3 | $4 |"); }

# 1. install: the missing packages from the wheels, alb without dependencies; torch stays the machine's
start=$(date +%s)
if [ -z "${FORCE_WHEELS:-}" ] && $PY -c "import hydra, omegaconf, faster_coco_eval, markdown, typer, threadpoolctl" 2>/dev/null; then
  status="ok (already installed)"
else
  $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" --find-links "$WHEELS" \
    "${MISSING[@]}" > "$OUT/install.log" 2>&1 && status=ok || status="FAILED (see install.log)"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
# alb from the checkout, without dependencies (an editable install would need a build backend offline)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
ALB=("$PY" -c "from alb.cli import main; main()")
torch_line=$($PY -c "import torch, torchvision; print(f'torch {torch.__version__}, torchvision {torchvision.__version__}, '
  f'cuda {torch.version.cuda}, ' + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA DEVICE'))" 2>&1)
row "install (wheels + alb, --no-deps)" "$status" "$(( $(date +%s) - start ))" "$torch_line"

# each step under its own limit (GNU timeout signals the group; alb's workers ignore it, alb stops)
step() {  # step <label> <limit seconds> <log> <command...>
  local label=$1 limit=$2 log=$3; shift 3
  local start; start=$(date +%s)
  if timeout "$limit" "$@" > "$OUT/$log" 2>&1; then
    row "$label" ok "$(( $(date +%s) - start ))" "$(grep -E "cycle [0-9]+:|^\| " "$OUT/$log" | tail -n 1 | cut -c1-160)"
  else
    row "$label" "FAILED ($log)" "$(( $(date +%s) - start ))" "$(tail -n 1 "$OUT/$log" | cut -c1-160)"
  fi
}
rows_of() {  # the non-timing columns of a seed's cycles.csv
  $PY -c "import pandas as pd, sys; f = pd.read_csv(sys.argv[1]); print(f[[c for c in f.columns if not c.endswith('_seconds')]].to_csv(index=False))" "$1"
}
MISSION=(run experiment=quickstart_det strategy=entropy seeds=1 protocol.cycles=2 device=$DEVICE progress=false)

# 2. the mission's command twice into fresh folders: deterministic=true (the default) gives the same rows
step "mission's command, run 1 (deterministic)" 240 mission1.log "${ALB[@]}" "${MISSION[@]}" "results_dir=$OUT/r1"
step "mission's command, run 2 (deterministic)" 240 mission2.log "${ALB[@]}" "${MISSION[@]}" "results_dir=$OUT/r2"
SEED_CSV=quickstart_det/entropy/seed_0/cycles.csv   # the preset's name, the strategy, seed 0
ref="$OUT/r1/$SEED_CSV"
same_rows() {  # both files there, non-empty, the same non-timing rows
  [ -s "$1" ] && [ -s "$2" ] && [ -n "$(rows_of "$1")" ] && [ "$(rows_of "$1")" = "$(rows_of "$2")" ]
}
if same_rows "$ref" "$OUT/r2/$SEED_CSV"; then
  row "same seed, same rows (two runs)" ok 0 "$(rows_of "$ref" | grep . | tail -n 1)"
else
  row "same seed, same rows (two runs)" FAILED 0 "$(rows_of "$ref" 2>&1 | tail -n 1) vs $(rows_of "$OUT/r2/$SEED_CSV" 2>&1 | tail -n 1)"
fi

# 3. SIGTERM to the whole process group during training, loader workers alive; the same command resumes
# in a process group of its own (setsid), as Slurm's step: the signal must not reach this script or `timeout`
step "group SIGTERM in training, num_workers=4 (exit 143)" 240 signal.log \
  bash -c 'setsid --wait "$@"; test $? -eq 143' _ $PY tests/_group_signal.py training SIGTERM 2 -- "${MISSION[@]:1}" \
  num_workers=4 "results_dir=$OUT/r3"
grep -q "^stopped:" "$OUT/signal.log" || row "  ... one 'stopped:' line" FAILED 0 "$(tail -n 1 "$OUT/signal.log" | cut -c1-160)"
step "  ... the same command again" 240 resume.log "${ALB[@]}" "${MISSION[@]}" num_workers=4 "results_dir=$OUT/r3"
if same_rows "$ref" "$OUT/r3/$SEED_CSV"; then
  row "  ... resumed rows equal the uninterrupted run's" ok 0 "$(rows_of "$OUT/r3/$SEED_CSV" | grep . | tail -n 1)"
else
  row "  ... resumed rows equal the uninterrupted run's" FAILED 0 "$(rows_of "$OUT/r3/$SEED_CSV" 2>&1 | tail -n 1)"
fi

# 4. the benchmarks, each with its baseline measured in the same run
export TORCH_HOME="$OUT/torch_home"
$PY -c "from alb.models.weights import write_random_weights as w
for e in ('ResNet18_Weights.IMAGENET1K_V1', 'ResNet50_Weights.IMAGENET1K_V1', 'VGG16_Weights.IMAGENET1K_FEATURES', 'VGG16_Weights.IMAGENET1K_V1'): w(e)" \
  > "$OUT/weights.log" 2>&1 || row "made-up weight files" "FAILED (weights.log)" 0 "$(tail -n 1 "$OUT/weights.log")"
step "bench_train (loader vs PIL, alb vs plain loop)" 150 bench_train.md $PY benchmarks/bench_train.py \
  ${BENCH_TRAIN_ARGS:---model retinanet_resnet50 --size 600 --batch 8 --workers 8 --steps 20 --repeats 2 --images 600 --image-size 500}
step "bench_determinism (cost per family)" 150 bench_determinism.md $PY benchmarks/bench_determinism.py \
  ${BENCH_DETERMINISM_ARGS:---size 600 --batch 8 --steps 10 --repeats 2}
step "bench_select (k-center vs a warm plain loop)" 90 bench_select.md $PY benchmarks/bench_select.py \
  ${BENCH_SELECT_ARGS:---sizes 50000 --methods kcenter_greedy noris_sum kcenter_plain}
step "bench_select_det (UWE, NORIS, CDAL, CCMS vs dense)" 150 bench_select_det.md $PY benchmarks/bench_select_det.py \
  ${BENCH_SELECT_DET_ARGS:-}
step "bench_detectors (pool inference vs plain forward)" 150 bench_detectors.md $PY benchmarks/bench_detectors.py \
  ${BENCH_DETECTORS_ARGS:---models retinanet_resnet50,fasterrcnn_resnet50,ssd300,centernet_r18 --sizes 600 --repeats 3 --pool 64 --workers 8}
CALIBRATE_PRESET=${CALIBRATE_PRESET:-ppal/voc}
step "alb calibrate experiment=$CALIBRATE_PRESET" 90 calibrate.log "${ALB[@]}" calibrate "experiment=$CALIBRATE_PRESET" \
  device=$DEVICE --seconds 20
step "alb sweep experiment=$CALIBRATE_PRESET --dry-run" 60 dryrun.log "${ALB[@]}" sweep "experiment=$CALIBRATE_PRESET" \
  device=$DEVICE --dry-run

# 5. the CUDA tests
step "pytest -m gpu tests/test_gpu.py" 150 pytest_gpu.log $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py

# optional: one reduced cycle of detection presets (PRESETS="elezi/voc noris/voc ...")
for preset in ${PRESETS:-}; do
  step "experiment=$preset, one reduced cycle, imagenet (made up)" 240 "preset_${preset//\//_}.log" \
    "${ALB[@]}" run "experiment=$preset" dataset=shapes strategy=random seeds=1 protocol.initial=40 protocol.step=20 \
    protocol.cycles=1 trainer.iterations=${PRESET_ITERATIONS:-20} "trainer.milestones=[15]" device=$DEVICE \
    progress=false "results_dir=$OUT/results" "name=preset_${preset//\//_}"
done

echo
echo "| step | status | seconds | detail |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
for table in "$OUT"/bench_train.md "$OUT"/bench_determinism.md "$OUT"/bench_select.md "$OUT"/bench_select_det.md \
             "$OUT"/bench_detectors.md "$OUT"/calibrate.log "$OUT"/dryrun.log; do
  [ -s "$table" ] && { echo; cat "$table"; }
done
! printf '%s\n' "${rows[@]}" | grep -q FAILED
