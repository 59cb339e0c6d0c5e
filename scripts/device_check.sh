#!/usr/bin/env bash
# Run alb's CUDA paths on a GPU machine that has no network and ships its own torch.
#
#   bash scripts/device_check.sh wheels [DIR]   # on a machine with PyPI access: fetch the wheels the
#                                               # GPU machine lacks into DIR (default .whl) for Python 3.12
#   bash scripts/device_check.sh run [DIR]      # on the GPU machine, in the checkout, with DIR beside it
#
# `run` installs those wheels and alb itself with --no-deps (the machine's torch and torchvision stay),
# then with device=cuda: both quick starts (one seed each), one reduced cycle of every detection
# preset from made-up ImageNet weight files (random tensors under torchvision's file names in a
# temporary TORCH_HOME, on the generated shapes data), benchmarks/bench_select.py,
# benchmarks/bench_detectors.py and benchmarks/bench_train.py (AMP), and prints one table. Logs go to $OUT (default /tmp/alb-device-check).
# A dry run without a GPU: DEVICE=cpu FORCE_WHEELS=1 BENCH_SELECT_ARGS="--sizes 2000 --budget 100"
#   BENCH_DETECTORS_ARGS="--models centernet_tiny --sizes 128 --repeats 2" PYTHON=.venv/bin/python
#   DEVICE_PYTHON_VERSION=3.11 (for `wheels`) bash scripts/device_check.sh run DIR
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mode=${1:-run}
WHEELS=${2:-.whl}
PY=${PYTHON:-python3}
PY_VERSION=${DEVICE_PYTHON_VERSION:-3.12}
# What the GPU machine lacked when last seen (NOTES.md), pinned as in pyproject.toml.
MISSING=(hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 faster-coco-eval==1.8.0 packaging markdown==3.11.3)

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
if [ -z "${FORCE_WHEELS:-}" ] && $PY -c "import hydra, omegaconf, faster_coco_eval, markdown" 2>/dev/null; then
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

# 2. both quick starts on the GPU, one seed each, with their reports
for preset in quickstart quickstart_det; do
  start=$(date +%s)
  if "${ALB[@]}" sweep "experiment=$preset" seeds=1 device=$DEVICE progress=false "results_dir=$OUT/results" \
       > "$OUT/$preset.log" 2>&1 && "${ALB[@]}" report "$OUT/results/$preset" >> "$OUT/$preset.log" 2>&1; then
    last=$(grep -E "cycle [0-9]+:" "$OUT/$preset.log" | tail -n 1 | sed 's/^ *//')
    row "alb sweep experiment=$preset seeds=1 device=$DEVICE" ok "$(( $(date +%s) - start ))" "last: $last"
  else
    row "alb sweep experiment=$preset seeds=1 device=$DEVICE" "FAILED ($preset.log)" "$(( $(date +%s) - start ))" \
        "$(tail -n 1 "$OUT/$preset.log" | cut -c1-160)"
  fi
done

# 2b. every detection preset for one reduced cycle (shapes data, 20 iterations), from made-up
# ImageNet weights: the recipes (weights, augmentation, input sizes) run on the GPU end to end
export TORCH_HOME="$OUT/torch_home"
$PY -c "from alb.models.weights import write_random_weights as w
for e in ('ResNet18_Weights.IMAGENET1K_V1', 'ResNet50_Weights.IMAGENET1K_V1', 'VGG16_Weights.IMAGENET1K_FEATURES'): w(e)" \
  > "$OUT/weights.log" 2>&1 || row "made-up weight files" "FAILED (weights.log)" 0 "$(tail -n 1 "$OUT/weights.log")"
for preset in ${PRESETS:-elezi/voc noris/voc noris/kitti ppal/voc uwe/voc_retinanet uwe/voc_faster_rcnn reality_check/voc}; do
  start=$(date +%s)
  log="$OUT/preset_${preset//\//_}.log"
  if "${ALB[@]}" run "experiment=$preset" dataset=shapes strategy=random seeds=1 protocol.initial=40 protocol.step=20 \
       protocol.cycles=1 trainer.iterations=${PRESET_ITERATIONS:-20} "trainer.milestones=[15]" device=$DEVICE \
       progress=false "results_dir=$OUT/results" "name=preset_${preset//\//_}" > "$log" 2>&1; then
    last=$(grep -E "cycle [0-9]+:" "$log" | tail -n 1 | sed 's/^ *//')
    row "experiment=$preset, one reduced cycle, imagenet (made up)" ok "$(( $(date +%s) - start ))" "last: $last"
  else
    row "experiment=$preset, one reduced cycle, imagenet (made up)" "FAILED ($(basename "$log"))" \
        "$(( $(date +%s) - start ))" "$(tail -n 1 "$log" | cut -c1-160)"
  fi
done

# 3. the benchmarks (alb.select, the detectors and training run on CUDA when it is there)
for bench in "bench_select.py ${BENCH_SELECT_ARGS:---sizes 10000 50000}" \
             "bench_detectors.py ${BENCH_DETECTORS_ARGS:---repeats 5}" \
             "bench_train.py ${BENCH_TRAIN_ARGS:---model retinanet_resnet50 --size 600 --batch 8 --workers 8 --steps 30}"; do
  start=$(date +%s)
  name=${bench%% *}
  if $PY benchmarks/$bench > "$OUT/${name%.py}.md" 2> "$OUT/${name%.py}.log"; then
    row "benchmarks/$bench" ok "$(( $(date +%s) - start ))" "table in ${name%.py}.md"
  else
    row "benchmarks/$bench" "FAILED (${name%.py}.log)" "$(( $(date +%s) - start ))" \
        "$(tail -n 1 "$OUT/${name%.py}.log" | cut -c1-160)"
  fi
done

echo
echo "| step | status | seconds | detail |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
for table in "$OUT"/bench_select.md "$OUT"/bench_detectors.md "$OUT"/bench_train.md; do
  [ -s "$table" ] && { echo; cat "$table"; }
done
! printf '%s\n' "${rows[@]}" | grep -q FAILED
