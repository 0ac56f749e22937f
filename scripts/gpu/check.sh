#!/usr/bin/env bash
# The whole GPU session in one command: validate and benchmark every CUDA path of cosched.
#
#   scripts/gpu/check.sh OUT_DIR [--device cuda|cpu] [--quick]
#
# Run from the repository root of a checkout on the GPU machine, with the wheels of
# scripts/gpu/fetch-wheels.sh in .whl/ (the device tool carries them: carry [".whl"]). It
# installs the wheels into a temporary target without network, then runs the steps below,
# each under its own time budget, each going on when an earlier one failed:
#
#   export    the zoo models the later steps use, exported once into the zoo cache
#   tests     the gpu-marked tests (the server's on a CUDA plan too) and the device-parametrised
#             runtime tests, --device cuda
#   profile   cosched profile of the full zoo (batch 1) -> profile store, model, held-out metrics
#   compile   cosched compile of the `mixed` mix with that model; cosched run of the plan
#             eagerly and as one CUDA graph, outputs compared with sequential execution
#   bench-b1  the side-by-side harness (benchmarks.run) on the mix, batch 1
#   bench-b8  the same at batch 8
#   trace     a Chrome trace of one plan run (streams overlapping)
#   two-rank  a plan over two GPUs (tiny bert tensor-split + dlrm placed), run on NCCL with
#             `cosched run PLAN --compare sequential --json`: round time, communication share,
#             agreement; with fewer than two GPUs it says so and counts as passed
#
# OUT_DIR receives at most 8 files, each well under 16 MiB: summary.md (each step ok or
# failed, its seconds and the tail of its log; BENCHMARKS.md rows ready to paste),
# results.json, profile.tar.gz (store, model, metrics), trace.json.gz, logs.tar.gz and the
# two harness JSONs. Logs are written as the steps run (tee), so a step cut by its budget
# loses nothing it printed. The budgets are caps that add up to 8 minutes; expected on an
# H200 is about 6 (exports about 1, profiling 1.5). Give the device call a timeout of 560 s.
#
# --device cpu --quick runs the same steps on the CPU at toy sizes (tiny zoo, few trials,
# few iterations) in under 3 minutes; tests/scripts/test_gpu_kit.py runs it in the suite
# so the kit never rots. The exit code is 0 when every step passed, 1 otherwise.
set -uo pipefail

usage() { echo "usage: scripts/gpu/check.sh OUT_DIR [--device cuda|cpu] [--quick]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$1; shift
DEVICE=cuda
QUICK=0
while [ $# -gt 0 ]; do
    case $1 in
        --device) [ $# -ge 2 ] || usage; DEVICE=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        *) usage ;;
    esac
done
case $DEVICE in cpu|cuda) ;; *) echo "check.sh: --device must be cpu or cuda, got '$DEVICE'" >&2; exit 2 ;; esac
cd "$(dirname "$0")/../.." || exit 2
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cosched-gpu-kit.XXXXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MALLOC_TOP_PAD_=$((512 << 20)) MPLBACKEND=Agg

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" .whl/*.whl >"$LOGS/wheels.log" 2>&1 \
        || { echo "check.sh: installing .whl/ failed (see below)" >&2; cat "$LOGS/wheels.log" >&2; }
    export PYTHONPATH="$WORK/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ "$QUICK" = 1 ]; then
    MIX=tiny SIZE=tiny BIG_BATCH=2 TRIALS=5 ITERS=3 WARMUP=1 PROFILE_S=8
    B_EXPORT=60 B_TESTS=60 B_PROFILE=60 B_COMPILE=60 B_BENCH=60 B_TRACE=30 B_TWO=60
    TESTS=(tests/runtime/test_cuda.py tests/runtime/test_cuda_issue.py tests/runtime/test_cuda_comm.py)
else
    MIX=mixed SIZE=full BIG_BATCH=8 TRIALS=40 ITERS=20 WARMUP=3 PROFILE_S=90
    B_EXPORT=75 B_TESTS=80 B_PROFILE=95 B_COMPILE=45 B_BENCH=60 B_TRACE=10 B_TWO=55
    # every gpu-marked test, and the tests that take --device (run_device) on the GPU; the
    # two-GPU test of test_distributed_cuda.py is left to the two-rank step, which runs the same
    TESTS=(tests/runtime/test_cuda.py tests/runtime/test_cuda_issue.py tests/runtime/test_cuda_comm.py
           tests/execution/test_host_values.py tests/runtime/test_serve.py
           tests/runtime/test_cpu_backend.py tests/runtime/test_zoo_correctness.py
           tests/codegen/test_zoo_plans.py tests/costmodel/test_device.py)
fi
COSCHED=("$PY" -m cosched.cli -q)
PLAN=$WORK/plan
MODELS=$WORK/models
: >"$WORK/steps.tsv"

# step NAME BUDGET_S CMD...: run CMD under `timeout`, log to $LOGS/NAME.log as it prints
step() {
    local name=$1 budget=$2; shift 2
    local start rc
    echo "== $name (budget ${budget}s): $*" | tee "$LOGS/$name.log"
    start=$(date +%s%N)
    timeout -k 5 "$budget" "$@" 2>&1 | tee -a "$LOGS/$name.log"
    rc=${PIPESTATUS[0]}
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((($(date +%s%N) - start) / 1000000))" "$budget" >>"$WORK/steps.tsv"
    echo "== $name: exit $rc" | tee -a "$LOGS/$name.log"
}

step export "$B_EXPORT" "$PY" scripts/gpu/kit.py export --mix "$MIX" --batch 1 "$BIG_BATCH" \
    --profile-zoo "$SIZE" --out "$MODELS"
step tests "$B_TESTS" "$PY" -m pytest -q -p no:cacheprovider --timeout 120 --device "$DEVICE" \
    -m "not slow" "${TESTS[@]}"
step profile "$B_PROFILE" "${COSCHED[@]}" profile --device "$DEVICE" --zoo "$SIZE" --batch 1 \
    --budget-s "$PROFILE_S" -o "$WORK/profile" --json
COST=$WORK/profile
[ -f "$COST/model/metadata.json" ] || { echo "check.sh: no fitted model; later steps use the roofline model"; COST=roofline; }
step compile "$B_COMPILE" bash -c "
    set -e
    ${COSCHED[*]} compile $MODELS/b1/*.onnx -o $PLAN --device $DEVICE --cost-model $COST --trials $TRIALS --json
    ${COSCHED[*]} run $PLAN --iters $ITERS --warmup $WARMUP --compare sequential --json
    if [ $DEVICE = cuda ]; then ${COSCHED[*]} run $PLAN --cuda-graph --iters $ITERS --warmup $WARMUP --compare sequential --json; fi"
for batch in 1 "$BIG_BATCH"; do
    name=bench-b1; [ "$batch" = 1 ] || name=bench-b$batch
    step "$name" "$B_BENCH" "$PY" -m benchmarks.run --mix "$MIX" --batch "$batch" --device "$DEVICE" \
        --cost-model "$COST" --trials "$TRIALS" --iters "$ITERS" --warmup "$WARMUP" --quiet \
        --json "$OUT/$name.json"
done
step trace "$B_TRACE" "${COSCHED[@]}" run "$PLAN" --iters 0 --trace "$WORK/trace.json" --json
step two-rank "$B_TWO" "$PY" scripts/gpu/kit.py two-rank --device "$DEVICE" --work "$WORK" --iters "$ITERS" \
    --warmup "$WARMUP"

"$PY" scripts/gpu/kit.py summarize --work "$WORK" --out "$OUT" --device "$DEVICE" --quick "$QUICK"
rc=$?
rm -rf "$WORK"
exit $rc
