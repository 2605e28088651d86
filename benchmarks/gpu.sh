#!/usr/bin/env bash
# The GPU figures of docs/cost-and-speed.md ("GPU"), measured in one go on a CUDA machine:
#
#   bash benchmarks/gpu.sh OUTDIR [SECONDS]
#
# - benchmarks/step.py: our training step against a plain PyTorch loop, bf16 autocast and
#   channels_last each on and off (Lite0 at 224 px, batch 64, and at 96 px, batch 16: the study's step).
# - The default study (`-m strategy=frozen,full,layerwise`) with trainer.amp and trainer.channels_last
#   on and off, and compiled: each run's result.json (train_time_s, FLOPs, accuracies), the command's wall.
# - `make sweep` (sweep=default) under benchmarks/trial_overhead.py: wall time, and how much is training.
#
# logger=none throughout (the speed of the step, not of W&B's files). Each command runs under what is
# left of SECONDS (default 540), most wanted first, so that a machine lent for a fixed time returns
# what it finished. DEVICE (default cuda) and EXTRA (overrides added to every study and sweep) are
# for a rehearsal on a CPU (STEP_EXTRA: arguments added to step.py's):
#   DEVICE=cpu EXTRA="trainer.epochs=1 ..." STEP_EXTRA="--steps 2 --rounds 1" bash benchmarks/gpu.sh /tmp/g 300
# OUTDIR gets log.txt (everything printed), runs.tgz (every result.json, sweep
# table and overhead JSON) and, per command, a line in times.tsv: name, exit code, wall seconds.
set -u
out=${1:?usage: benchmarks/gpu.sh OUTDIR [SECONDS]}
budget=${2:-540}
mkdir -p "$out"
work=$(mktemp -d /tmp/gpu-bench.XXXX)
start=$(date +%s)
exec > >(tee -a "$out/log.txt") 2>&1
DEVICE=${DEVICE:-cuda} EXTRA=${EXTRA:-} STEP_EXTRA=${STEP_EXTRA:-}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled

step() {  # step NAME CAP CMD...: run CMD with at most CAP seconds, and never past the budget
  local name=$1 cap=$2; shift 2
  local left=$(( budget - ($(date +%s) - start) - 15 ))
  if (( left < 20 )); then echo "== $name: skipped, ${left}s left"; printf '%s\tskipped\t0\n' "$name" >>"$out/times.tsv"; return; fi
  (( cap > left )) && cap=$left
  echo "== $name (at most ${cap}s): $*"
  local t0=$(date +%s.%N)
  timeout -k 5 "$cap" "$@"
  local rc=$?
  local t1=$(date +%s.%N)
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" | tee -a "$out/times.tsv"
  tar -czf "$out/runs.tgz" --exclude='*.pt' --exclude='*.pth' --exclude='*.ckpt' --exclude='*.npy' -C "$work" . 2>/dev/null  # after each command: what finished comes back
}

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import sys, torch, timm; print(sys.version.split()[0], 'torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')"
nproc

study() {  # study NAME AMP LAYOUT [OVERRIDE...]
  local name=$1 amp=$2 layout=$3; shift 3
  step "study-$name" 150 python3 -m src.train -m strategy=frozen,full,layerwise logger=none \
    "trainer.amp=$amp" "trainer.channels_last=$layout" "hydra.sweep.dir=$work/study-$name" "$@" $EXTRA
}
sweep() {  # sweep NAME AMP LAYOUT
  step "sweep-$1" 200 python3 benchmarks/trial_overhead.py --out "$work/sweep-$1.json" -- -m sweep=default \
    logger=none "trainer.amp=$2" "trainer.channels_last=$3" "hydra.sweep.dir=$work/sweep-$1" $EXTRA
}
steps() {  # steps SIZE BATCH STEPS AMP LAYOUT
  step "step$1-b$2-amp_$4-$5" 60 python3 benchmarks/step.py --device "$DEVICE" --layout "$5" \
    $([ "$4" = on ] && echo --amp) --image-size "$1" --batch "$2" --steps "$3" --rounds 5 $STEP_EXTRA
}

# 2026-12-04 (docs/cost-and-speed.md, "GPU") measured the step at 96 px in all four combinations, the
# study in three and the sweep with both on and both off. What that left open comes first: the sweep
# with the CUDA defaults (bf16, channels-first), the layouts at 224 px and batch 64 (where
# channels_last may win), torch.compile, and the study's fourth combination; then repeats.
sweep on-off on off
for amp in on off; do
  for layout in channels_last channels-first; do steps 224 64 15 "$amp" "$layout"; done
done
study compiled on off trainer.compile=true
study off-on off on
study on-off on off
for amp in on off; do
  for layout in channels_last channels-first; do steps 96 16 30 "$amp" "$layout"; done
done
sweep off-off off off
echo "== done in $(( $(date +%s) - start ))s"
