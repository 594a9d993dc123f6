#!/usr/bin/env bash
# The GPU figures of docs/performance.md ("On a GPU node") in one run on a GPU node, each part
# under its own time limit so one that hangs costs only its share (~10 min in all on an H200
# node with 16 vCPUs):
#
#   smoke         each real-size model alone on the GPU, bf16 (gpu_smoke.py)
#   per_modality  the job's sustained rate with a pool per model, at 1x, 16x and 64x the corpus
#   colocated     the same with 4 colocated actors sharing the GPU (a quarter each)
#   footage       per_modality on real camera footage (~3.5x the gradient's decode cost; not run by
#                 default: ~3 min more). A node without the package index needs the source clip
#                 fetched beforehand into $WORK: python benchmarks/footage.py --fetch "$WORK"
#
#   decode        the frame reader on NVDEC against the CPU, same clips of that footage (gpu_decode.py;
#                 not run by default: ~1 min; the same source clip)
#   footage_nvdec footage with decode.hwaccel: cuda (not run by default: ~3 min; the same source clip)
#   ceiling       the driver's ceiling: the production graph with pass-through work (driver_ceiling.py;
#                 not run by default: ~3 min)
#
#   benchmarks/gpu_checks.sh                 # smoke, per_modality, colocated
#   benchmarks/gpu_checks.sh per_modality footage   # some of them
#   benchmarks/gpu_checks.sh all             # every part (~23 min: in two calls where a call is capped at 10)
#
# Reports (the last line of each log is its JSON) go to $OUT or benchmarks/results/gpu-checks/.
# The corpus is generated once under $WORK (default: a folder beside the reports).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/gpu-checks}
work=${WORK:-$out/work}
mkdir -p "$out" "$work"
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(smoke per_modality colocated)
[ "${parts[*]}" != all ] || parts=(smoke per_modality colocated footage decode footage_nvdec ceiling)
scale=(--device cuda --quick --repeats 1 --scale --scale-factors 1,16,64 --work-dir "$work"
       --skip decode_only,naive,pipeline,speech_engines)

run() {  # name, seconds, command...
    local name=$1 limit=$2
    shift 2
    echo "$(date +%T) $name (at most ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    tail -n 1 "$out/$name.log" > "$out/$name.json"
    echo "$(date +%T) $name: exit $rc"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1
for part in "${parts[@]}"; do
    case $part in
        smoke) run smoke 180 python benchmarks/gpu_smoke.py ;;
        per_modality) run per_modality 300 python benchmarks/throughput.py "${scale[@]}" ;;
        colocated) run colocated 300 python benchmarks/throughput.py "${scale[@]}" --placement colocated --replicas 4 ;;
        footage) run footage 300 python benchmarks/throughput.py "${scale[@]}" --corpus footage ;;
        decode) run decode 180 python benchmarks/gpu_decode.py --work-dir "$work" ;;
        footage_nvdec) run footage_nvdec 300 python benchmarks/throughput.py "${scale[@]}" --corpus footage --decode-hwaccel ;;
        ceiling) run ceiling 300 python benchmarks/driver_ceiling.py --videos 24 --scale-factors 1,16 --work-dir "$work" ;;
        *) echo "unknown part '$part' (smoke, per_modality, colocated, footage, decode, footage_nvdec, ceiling, all)" >&2
           exit 2 ;;
    esac
done
