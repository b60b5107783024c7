#!/usr/bin/env bash
# One command for a machine with a GPU: every CUDA path once, then every benchmark, each figure beside its
# target, in ≤ 8 minutes on one GPU.
#
#   benchmarks/gpu_check.sh                 # on the GPU (CIFAR-10-LT sizes)
#   benchmarks/gpu_check.sh --device cpu    # the same scripts at smoke-test sizes on the CPU (in `make test`)
#
# Steps (each its own process, its own time limit; a failing step does not stop the others):
#   cuda_paths       device choice under Ray, a GIT trial in bf16/channels_last and compiled, fp32 evaluation,
#                    the LDAM head, deterministic mode, RNG restore across devices, generator steps, the
#                    memory probe as a Ray task, a 4-way packed mini-sweep (generator stage + GIT trials)
#   trial_time       a 200-epoch CIFAR-10-LT ResNet-32 trial with GIT, extrapolated (target ≤ 3 min)
#   epoch_throughput the trial's epoch vs a PIL + DataLoader pipeline (target ≥ 20×)
#   git_step         GIT step / plain step at the reference threshold (target ≤ 1.3×)
#   packing          K = 1, 2, 4, 8 trials on one GPU (target ≥ 8 trials, ≥ 6× the trials/hour of one)
#   generator_step   generator pretraining img/s (reference MUNIT, batch 1 and 8 fp32, batch 32 bf16)
#   tune_overhead    Ray Tune + MLflow cost per reported epoch and per trial
# Every step's output is kept in the log folder (GPU_CHECK_LOGS, default a new temporary folder); the summary
# at the end lists every RESULT line. Exit status 1 when a step failed, else 0 (a missed target is reported,
# not an error: the figures are what the run measured).
set -uo pipefail

device=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="${2:-}"; shift 2 ;;
    --device=*) device="${1#--device=}"; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (expected --device cuda|cpu)" >&2; exit 2 ;;
  esac
done
if [ "$device" != cuda ] && [ "$device" != cpu ]; then
  echo "gpu_check.sh: --device: expected cuda or cpu, got '$device'" >&2; exit 2
fi

cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PY" ]; then
  echo "gpu_check.sh: $PY not found (run 'make venv' first, or set PYTHON)" >&2; exit 2
fi
if [ "$device" = cuda ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check.sh: --device cuda: no CUDA device is visible to torch here (use --device cpu for the smoke run)" >&2
  exit 2
fi
logs="${GPU_CHECK_LOGS:-$(mktemp -d -t gpu_check.XXXXXX)}"
mkdir -p "$logs"
export RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true PYTHONUNBUFFERED=1

if [ "$device" = cuda ]; then
  # CIFAR-10-LT sizes; about 7 minutes in all on one H100-class GPU (the limits add up to more: worst case).
  small=()
  steps=(
    "cuda_paths 240 benchmarks/cuda_paths.py --time-limit 225"
    "trial_time 90 benchmarks/trial_time.py"
    "epoch_throughput 75 benchmarks/epoch_throughput.py"
    "git_step 75 benchmarks/git_step.py"
    "packing 120 benchmarks/packing.py --counts 1,2,4,8"
    "generator_step 45 benchmarks/generator_step.py --sizes reference --batches 1,8 --rounds 3"
    "generator_step_bf16 30 benchmarks/generator_step.py --sizes reference --batches 32 --rounds 3 --precision bf16"
    "tune_overhead 60 benchmarks/tune_overhead.py"
  )
else
  # Smoke sizes: a 100 → 1 long tail, a small CNN, few steps; checks that every script runs, not speed.
  small=(--n-max 100 --set model.arch=small_cnn --set eval.inv_images_per_class=2 --set eval.inv_transforms=2)
  steps=(
    "cuda_paths 240 benchmarks/cuda_paths.py --time-limit 225"
    "trial_time 150 benchmarks/trial_time.py --epochs 1 ${small[*]}"
    "epoch_throughput 120 benchmarks/epoch_throughput.py --data-epochs 1 ${small[*]}"
    "git_step 180 benchmarks/git_step.py --steps 1 --warmup 0 ${small[*]}"
    "packing 150 benchmarks/packing.py --counts 1,2 --epochs 1 ${small[*]}"
    "generator_step 90 benchmarks/generator_step.py --sizes demo --batches 8 --rounds 1 --steps 1 --warmup 1"
    "tune_overhead 150 benchmarks/tune_overhead.py --epochs 2"
  )
fi

echo "gpu_check: device $device; logs in $logs"
failed=()
start=$(date +%s)
for step in "${steps[@]}"; do
  read -r name limit script args <<<"$step"
  echo
  echo "=== $name: $PY $script $args --device $device (limit ${limit}s)"
  t0=$(date +%s)
  # shellcheck disable=SC2086  # args are word-split on purpose
  timeout --signal=TERM --kill-after=10 "$limit" "$PY" "$script" --device "$device" $args 2>&1 | tee "$logs/$name.log"
  rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $(( $(date +%s) - t0 )) s"
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 124 ] && echo "=== $name: ran past its ${limit}s limit"
    failed+=("$name (exit $rc)")
  fi
done

echo
echo "## gpu_check summary: device $device, $(( $(date +%s) - start )) s in all"
echo
echo "| figure | measured | target | verdict |"
echo "|---|---|---|---|"
for step in "${steps[@]}"; do
  read -r name _ <<<"$step"
  grep -h '^RESULT | ' "$logs/$name.log" 2>/dev/null | sed 's/^RESULT | /| /; s/$/ |/'
  grep -h '^PASS \|^FAIL ' "$logs/$name.log" 2>/dev/null | sed 's/^\(PASS\|FAIL\) \([^:]*\): \(.*\)$/| CUDA path check \2 | \3 | passes | \1 |/'
done
if [ "$device" = cpu ]; then
  echo
  echo "(cpu smoke sizes: the figures show that each script runs, not what a GPU reaches)"
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo
  echo "gpu_check: FAILED steps: ${failed[*]}"
  exit 1
fi
echo
echo "gpu_check: every step ran"
