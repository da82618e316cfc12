#!/usr/bin/env bash
# The whole GPU check in one command, for the first time a GPU is lent (< 8 minutes on an H200):
#   1. the tests that use CUDA: every test marked `gpu` (sync-debug forward+backward of each block
#      family, cuEquivariance kernels) and the kernel tests parametrised over devices;
#   2. the main benchmarks with --device cuda, each writing its JSON (machine included) to $OUT.
#
#   bash benchmarks/gpu_check.sh                 # from the repository root, CUDA visible
#   OUT=runs/gpu_h200 bash benchmarks/gpu_check.sh
#   DRY_RUN=1 bash benchmarks/gpu_check.sh       # print the commands only (a test checks them)
#
# Every command has its own time limit ($LIMIT seconds); a failure is reported and the rest still
# run; the exit status is the number of failed steps.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs/gpu_check}
LIMIT=${LIMIT:-150}
DRY_RUN=${DRY_RUN:-0}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failed=0

step() {  # step NAME COMMAND...: run with a time limit, log to $OUT/NAME.log
  local name=$1
  shift
  if [ "$DRY_RUN" = 1 ]; then
    echo "$*"
    return
  fi
  echo "== $name: $*"
  local t0=$SECONDS
  if timeout "$LIMIT" "$@" 2>&1 | tee "$OUT/$name.log"; [ "${PIPESTATUS[0]}" -ne 0 ]; then
    echo "!! $name failed (log: $OUT/$name.log)"
    failed=$((failed + 1))
  fi
  echo "== $name: $((SECONDS - t0)) s"
}

if [ "$DRY_RUN" != 1 ]; then
  mkdir -p "$OUT"
  $PY -c "import torch, sys; ok = torch.cuda.is_available(); print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name(0) if ok else 'NO CUDA DEVICE'); sys.exit(0 if ok else 1)" || exit 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

step tests $PY -m pytest -q -p no:cacheprovider -m gpu tests/
step kernel_tests $PY -m pytest -q -p no:cacheprovider tests/ops/test_ops_spmm.py tests/ops/test_ops_segment.py \
  tests/test_cuda_sync_free.py
step pyg_layers $PY benchmarks/pyg_layers.py --all --no-dgl --device cuda --repeats 20 --warmup 3 \
  --json "$OUT/pyg_layers.json"
step kernels $PY benchmarks/kernels.py --device cuda --repeat 21 --json "$OUT/kernels.json"
step nbody $PY benchmarks/nbody.py --device cuda --batch 100 --repeat 30 --json "$OUT/nbody.json"
step geometric $PY benchmarks/geometric.py --device cuda --graphs 256 --atoms 24 --repeats 20 --json "$OUT/geometric.json"
step cueq_tfn $PY benchmarks/cueq_tfn.py --device cuda --graphs 200 --nodes 20 --json "$OUT/cueq_tfn.json"
step ipa $PY benchmarks/ipa.py --device cuda --sizes 128 256 512 --json "$OUT/ipa.json"
step gns $PY benchmarks/gns.py --device cuda --json "$OUT/gns.json"

[ "$DRY_RUN" = 1 ] || echo "gpu_check: $failed failed step(s); results in $OUT"
exit "$failed"
