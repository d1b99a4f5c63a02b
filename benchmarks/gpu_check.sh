#!/usr/bin/env bash
# The CUDA check of drl on one NVIDIA GPU with no package registry, in one call of at most 8 minutes
# per phase (its time limits add up to 420 s for torch and 480 s for mjwarp).
#
#   bash benchmarks/gpu_check.sh [torch|mjwarp|all] [OUT_DIR]
#
#   torch   CUDA tests of the torch-batched envs, storage, returns and PPO, then the GPU rows of
#           benchmarks.torch_ppo on drl/CartPole-v0 and drl/Pendulum-v0 (PPO), then the parallel-mode
#           SAC/TD3 steps/s rows on drl/Pendulum-v0 (needs gymnasium: part 1 of the carried wheels).
#   mjwarp  CUDA tests of MuJoCo Warp, then the drl/HalfCheetah-v0 rows: PPO, then SAC/TD3 parallel
#           mode steps/s (needs every part).
#   all     both (the default).
# The SAC/TD3 rows are short: a warm-up (learning_starts + one iteration of updates), then a fixed
# number of vectorised steps timed (benchmarks/torch_ppo.py ROWS); 100 s for both rows of a phase.
#
# Wheels: `python -m benchmarks.gpu_wheels pack` here writes .wheels/part-<i>; carry one part per
# call; each call installs what it brought into .gpu_site (kept on the GPU machine between calls).
# Writes into OUT_DIR (default: $OUT when set, else benchmarks/results/gpu): tests-<phase>.txt,
# env.txt and the torch_ppo report (results.json, report.md, return_vs_wall.png, device named).
# The files are built in .gpu_out (kept between calls, so the report of a second call holds the rows
# of the first) and copied to OUT_DIR at the end.
# Each phase has its own time limit so one hang cannot eat the call. Without a GPU it runs the same
# steps on the CPU at smoke scale (the CUDA tests skip), which checks that the script starts.
set -uo pipefail
cd "$(dirname "$0")/.."
phase=${1:-all}
dest=${2:-${OUT:-benchmarks/results/gpu}}
case "$phase" in torch|mjwarp|all) ;; *) echo "usage: $0 [torch|mjwarp|all] [OUT_DIR]" >&2; exit 2;; esac
out=.gpu_out
mkdir -p "$out" "$dest" .gpu_site/.parts
py=${PYTHON:-python3}

for part in .wheels/part-*; do  # install each carried part once
  [ -d "$part" ] || continue
  [ -e ".gpu_site/.parts/$(basename "$part")" ] && continue
  "$py" -m benchmarks.gpu_wheels install "$part" --target .gpu_site || exit 1
  touch ".gpu_site/.parts/$(basename "$part")"
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d .gpu_site ] && export PYTHONPATH="$PYTHONPATH:$PWD/.gpu_site"

has_cuda=$("$py" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$py" - <<'PY'
import importlib, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
for mod in ("gymnasium", "numpy", "numba", "mujoco", "warp", "mujoco_warp"):
    try:
        print(f"{mod} {getattr(importlib.import_module(mod), '__version__', '?')}")
    except Exception as err:  # noqa: BLE001
        print(f"{mod}: not importable ({type(err).__name__}: {err})")
PY
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

if [ "$has_cuda" = 1 ]; then device=cuda; scale=1; else device=cpu; scale=0.05; fi
status=0

run_tests() {  # $1: phase name, $2: time limit (s), rest: pytest selection
  local name=$1 limit=$2; shift 2
  echo "== CUDA tests ($name), limit ${limit}s"
  timeout -k 10 "$limit" "$py" -m pytest -q -p no:cacheprovider -m cuda -rfEs "$@" > "$out/tests-$name.txt" 2>&1
  local rc=$?
  tail -n 25 "$out/tests-$name.txt"
  [ $rc -eq 0 ] || [ $rc -eq 5 ] || status=1
}

run_rows() {  # $1: time limit (s), rest: torch_ppo arguments
  local limit=$1; shift
  echo "== torch_ppo $* (device $device), limit ${limit}s"
  timeout -k 10 "$limit" "$py" -m benchmarks.torch_ppo --device "$device" --out "$out" --append "$@" \
    || status=1
}

if [ "$phase" = torch ] || [ "$phase" = all ]; then
  run_tests torch 170 tests -k "not mjwarp"
  if [ "$device" = cuda ]; then
    run_rows 150 --rows cartpole pendulum --steps cartpole=50000000 pendulum=50000000
  else
    run_rows 150 --rows cartpole pendulum --scale "$scale"
  fi
  run_rows 100 --rows sac-pendulum td3-pendulum
fi
if [ "$phase" = mjwarp ] || [ "$phase" = all ]; then
  run_tests mjwarp 180 tests -k mjwarp
  if [ "$device" = cuda ]; then
    run_rows 200 --rows halfcheetah --steps halfcheetah=40000000
  else
    run_rows 200 --rows halfcheetah --scale 0.25
  fi
  run_rows 100 --rows sac-halfcheetah td3-halfcheetah
fi
[ "$(realpath "$out")" = "$(realpath "$dest")" ] || cp -r "$out"/. "$dest"/
ls -la "$dest"
exit $status
