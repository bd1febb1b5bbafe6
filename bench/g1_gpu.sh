#!/usr/bin/env bash
# G1 on one CUDA machine, in one call: build Kennel against the machine's PyTorch 2.x (with the
# Debian-dependency bundle from ../shared/gpu, copied into the checkout as .gpu/), run the GPU
# tests (ctest -L gpu), then measure Kennel's G1 figures and print them beside plain PyTorch's
# on the same card (.gpu/pytorch_anchors.py):
#   - ResNet-50 fp16 raw forward, batch 128 (kennel-bench-limits) vs PyTorch eager channels-last
#   - ResNet-50 fp16 served from 500x375 JPEGs: 32 streams x 8 in flight, and a fixed rate
#     (kennel-inference + kennelctl bench), as a ratio of the raw forward
#   - ResNet-50 training images/s, bf16 autocast, batch 128, on a generated dogImages-style
#     folder of JPEGs (1 trainer, NCCL) vs PyTorch's bf16 training step
#
# Usage, from the repository root (OUT: where the at most 8 result files go):
#   OUT=/tmp/g1 bash bench/g1_gpu.sh
# Without a GPU, PyTorch with CUDA or .gpu/, it says what it skips and why, runs what it can
# (nothing that needs the GPU) and exits 0: a dry run. Everything is bounded: under 8 minutes.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$REPO/g1-out}
BUDGET=${G1_BUDGET_S:-470}
PY=${PYTHON:-python3}
T0=$SECONDS
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
W=$(mktemp -d /tmp/kennel-g1.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT

say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((BUDGET - (SECONDS - T0))); }
bounded() {  # bounded SECONDS CMD...: at most SECONDS, never past the budget.
  local want=$1 l
  shift
  l=$(($(left) - 5))
  ((l < want)) && want=$l
  ((want < 5)) && { echo "(out of time budget: skipped $*)"; return 124; }
  timeout -k 5 "$want" "$@"
}
port_of() {
  for _ in $(seq 1 240); do
    local p
    p=$(grep -oE 'listening on port [0-9]+' "$1" 2>/dev/null | head -n1 | grep -oE '[0-9]+$')
    [[ -n $p ]] && { echo "$p"; return; }
    sleep 0.5
  done
}
json_field() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$1" "$2" 2>/dev/null; }

# ------------------------------------------------------------------ what this machine has
gpu=$(timeout 20 nvidia-smi -L 2>/dev/null | head -n1)
torch_cuda=$(timeout 120 "$PY" -c 'import torch; print(torch.__version__ if torch.cuda.is_available() else "")' 2>/dev/null)
say "G1 on $(hostname): ${gpu:-no GPU visible (nvidia-smi)}; torch ${torch_cuda:-with CUDA not importable by $PY}; $(nproc) cores"
missing=""
[[ -z $gpu ]] && missing+=" a GPU (nvidia-smi -L lists none);"
[[ -z $torch_cuda ]] && missing+=" PyTorch with a usable CUDA device ($PY);"
[[ -f $REPO/.gpu/build.sh && -f $REPO/.gpu/deps.tar.xz ]] || missing+=" .gpu/ (copy ../shared/gpu there);"
if [[ -n $missing ]]; then
  say "DRY RUN: missing$missing so nothing below runs:"
  say "  SKIPPED build: .gpu/build.sh against the machine's torch (NCCL backend on), into build-gpu"
  say "  SKIPPED tests: ctest -L gpu (NCCL communicator at world size 1, 2+ GPU collectives, CUDA serving)"
  say "  SKIPPED raw forward: kennel-bench-limits limits --device cuda --precision fp16 (ResNet-50, batch <= 128)"
  say "  SKIPPED serving: kennel-inference --device cuda --precision fp16 --max_batch 128 under kennelctl bench"
  say "  SKIPPED training: 1 trainer, --backend nccl --mixed-precision, ResNet-50, batch 128, generated JPEGs"
  say "  SKIPPED anchors: .gpu/pytorch_anchors.py (PyTorch eager / CUDA graph / bf16 training on the same card)"
  say "dry run done in $((SECONDS - T0)) s; results would be in $OUT"
  exit 0
fi

# ------------------------------------------------------------------ build (+ the bundle)
BUILD=$REPO/build-gpu
mkdir -p "$W/build-out"
say "== build ($(left) s left)"
OUT=$W/build-out KENNEL_SRC=$REPO KENNEL_BUILD_DIR=$BUILD JOBS=$(nproc) KDEPS_DEADLINE_S=$(( $(left) < 300 ? $(left) - 120 : 240 )) \
  KDEPS_CMAKE_ARGS="-DKENNEL_TORCH_PYTHON=$(command -v "$PY")" bash "$REPO/.gpu/build.sh" >"$W/build.txt" 2>&1
build_rc=$?
cp "$W/build-out/summary.txt" "$OUT/build-summary.txt" 2>/dev/null
grep -E '^(configure|build|failed targets)|NCCL backend' "$W/build-out/summary.txt" 2>/dev/null | sed 's/^/  /' | tee -a "$SUMMARY"
if ((build_rc != 0)); then
  say "build FAILED (rc $build_rc): see build-summary.txt; nothing else runs"
  exit 1
fi
# shellcheck disable=SC1091
. "$REPO/kenv.sh"

# ------------------------------------------------------------------ GPU tests
say "== ctest -L gpu ($(left) s left)"
(cd "$BUILD" && bounded 150 ctest -L gpu --output-on-failure --timeout 120) >"$OUT/ctest-gpu.log" 2>&1
say "  $(grep -E 'tests passed|tests failed' "$OUT/ctest-gpu.log" | tail -n1)"
grep -E 'Passed|\*\*\*|Skipped|Not Run' "$OUT/ctest-gpu.log" | sed -E 's/ +/ /g; s/^/  /' | tee -a "$SUMMARY"

# ------------------------------------------------------------------ raw forward + preprocessing
say "== raw forward ($(left) s left)"
L=$BUILD/bench/kennel-bench-limits
{
  bounded 60 "$L" make-artifact --arch resnet50 --out "$W/r50" &&
    bounded 60 "$L" make-jpegs --out "$W/jpegs" --count 512 &&
    bounded 120 "$L" limits --artifact "$W/r50" --images "$W/jpegs" --device cuda --precision fp16 --threads "$(nproc)"
} >"$OUT/limits.log" 2>&1
# "model batch 128: 5132.0 images/s" per batch size, then "model best: ..." and "preprocess: ...".
raw=$(grep -oE '^model batch 128: [0-9.]+' "$OUT/limits.log" | grep -oE '[0-9.]+$' | cut -d. -f1)
say "  kennel raw forward fp16 batch 128: ${raw:-?} images/s"
grep -E '^model best|^preprocess' "$OUT/limits.log" | sed 's/^/  /' | tee -a "$SUMMARY"
# Each CUDA setting of the inference path alone, and none, at batch 128 (kennel-inference
# --cuda_settings; all four are on above and by default).
for setting in none channels_last cudnn_benchmark pinned_upload own_stream; do
  bounded 60 "$L" limits --artifact "$W/r50" --images "$W/jpegs" --device cuda --precision fp16 --threads 2 \
    --batch 128 --cuda_settings "$setting" >"$W/limits-$setting.log" 2>&1
  cat "$W/limits-$setting.log" >>"$OUT/limits.log"
  one=$(grep -oE '^model batch 128: [0-9.]+' "$W/limits-$setting.log" | grep -oE '[0-9.]+$' | cut -d. -f1)
  say "  raw forward fp16 batch 128 with --cuda_settings $setting: ${one:-?} images/s"
done

# ------------------------------------------------------------------ serving from JPEGs
say "== serving from JPEGs ($(left) s left)"
"$BUILD/inference_node/kennel-inference" --listen 127.0.0.1:0 --metrics_port -1 --model_dir "$W/r50" \
  --device cuda --precision fp16 --max_batch 128 --queue 100000 >"$W/inf.log" 2>&1 &
pids+=($!)
iport=$(port_of "$W/inf.log")
{
  if [[ -n $iport ]]; then
    bounded 40 "$BUILD/cli/kennelctl" -o json bench -s "127.0.0.1:$iport" --concurrency 32 --depth 8 --duration 15 \
      --images "$W/jpegs" >"$W/bench-sat.json"
    cat "$W/bench-sat.json"
    bounded 30 "$BUILD/cli/kennelctl" -o json bench -s "127.0.0.1:$iport" --concurrency 16 --rate 1000 --duration 10 \
      --images "$W/jpegs" >"$W/bench-rate.json"
    cat "$W/bench-rate.json"
  else
    echo "inference node did not start:"
  fi
  tail -n 20 "$W/inf.log"
} >"$OUT/serve.log" 2>&1
served=$(json_field "$W/bench-sat.json" 'round(d["throughput"])')
say "  served (32 streams x 8): ${served:-?} req/s, p50 $(json_field "$W/bench-sat.json" 'd["p50_ms"]') ms," \
  "p99 $(json_field "$W/bench-sat.json" 'd["p99_ms"]') ms, mean batch $(json_field "$W/bench-sat.json" 'd["mean_batch"]')," \
  "failed $(json_field "$W/bench-sat.json" 'd["failed"]')"
say "  at 1000 req/s: p50 $(json_field "$W/bench-rate.json" 'd["p50_ms"]') ms, p99 $(json_field "$W/bench-rate.json" 'd["p99_ms"]') ms"
say "  node's $(grep -oE 'threads: .*' "$W/inf.log" | head -n1); $(grep -oE 'CUDA settings: .*' "$W/inf.log" | head -n1)"
kill "${pids[0]}" 2>/dev/null

# ------------------------------------------------------------------ training
say "== training ($(left) s left)"
{
  bounded 120 "$L" make-dataset --out "$W/dogs" --classes 8 --count 192
  "$BUILD/coordinator/kennel-coordinator" --listen 127.0.0.1:0 --data_dir "$W/coord" >"$W/coord.log" 2>&1 &
  pids+=($!)
  cport=$(port_of "$W/coord.log")
  "$BUILD/trainer_node/kennel-trainer" --coordinator "127.0.0.1:$cport" --name gpu-1 --work_dir "$W/t1" \
    >"$W/trainer.log" 2>&1 &
  pids+=($!)
  sleep 3
  bounded 150 "$BUILD/cli/kennelctl" -c "127.0.0.1:$cport" -o json train --dataset "$W/dogs" --arch resnet50 \
    --backend nccl --mixed-precision -w 1 -e 2 -b 128 --lr 0.05 --data-workers "$(nproc)" --wait >"$W/job.json"
  cat "$W/job.json"
  tail -n 30 "$W/trainer.log"
} >"$OUT/train.log" 2>&1
trained=$(json_field "$W/job.json" 'round(d["epochs"][-1]["images_per_second"])')
say "  kennel training ResNet-50 bf16 batch 128 (epoch 2): ${trained:-?} images/s; job $(json_field "$W/job.json" 'd["state"]')"

# ------------------------------------------------------------------ PyTorch on the same card
say "== PyTorch anchors ($(left) s left)"
bounded 150 "$PY" "$REPO/.gpu/pytorch_anchors.py" infer train nccl >"$OUT/anchors.log" 2>&1
eager=$(grep resnet50_infer_fp16_eager "$OUT/anchors.log" | grep '"batch": 128' | grep -oE '"img_s": [0-9]+' | grep -oE '[0-9]+')
ptrain=$(grep resnet50_train "$OUT/anchors.log" | grep '"bf16"' | grep -oE '"img_s": [0-9]+' | grep -oE '[0-9]+' | head -n1)

ratio() { [[ -n $1 && -n $2 ]] && "$PY" -c "print(f'{$1/$2:.2f}x')" || echo "?"; }
say "== G1 summary"
say "  raw forward fp16 batch 128: kennel ${raw:-?} vs PyTorch eager ${eager:-?} images/s ($(ratio "$raw" "$eager"); target >= 0.95x)"
say "  served from JPEGs: ${served:-?} req/s = $(ratio "$served" "$raw") of kennel's raw forward (target >= 0.9x, > 12000)"
say "  training bf16: kennel ${trained:-?} vs PyTorch ${ptrain:-?} images/s ($(ratio "$trained" "$ptrain"); target >= 1.0x;" \
  "PyTorch's figure is batch 256 on synthetic tensors)"
say "done in $((SECONDS - T0)) s; files: $(cd "$OUT" && ls | tr '\n' ' ')"
