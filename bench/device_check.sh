#!/usr/bin/env bash
# The one prepared GPU check: at most ~8 minutes on one H100 / H200. Writes JSON files and a markdown
# table (device_check.md) to $OUT (default results/device_check):
#   1. the paper-preset decoder: training samples/s (bf16, torch.compile, fused AdamW, batch 128) and
#      token generation images/s (K=8, batch 64), plus generation with the VQ decode of a random
#      UniXGen-shaped VQ-GAN (bench/bench_decoder.py), against the targets >= 600 and >= 250;
#   2. the UniXGen-shaped VQ-GAN alone: encode and decode images/s at 512 px (bench/bench_vqgan.py);
#   3. the rehearsal profile's stages on CUDA (device cuda, bf16, compile on, torchrun with one
#      process), from a folder prepared on any machine with `python tests/rehearsal.py prepare DIR`
#      and passed as REHEARSAL=DIR (skipped when unset).
#
#   bench/device_check.sh             # on the GPU machine
#   bench/device_check.sh --dry-run   # tiny shapes on the CPU: checks the script itself (CI runs this)
#
# Packages the GPU image lacks (taming-transformers-rom1504, omegaconf) are installed from .whl/ when
# that folder exists: `bash bench/device_wheels.sh` fills it on a machine with PyPI access.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results/device_check}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
if [[ -d .whl ]] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RAYGEN_TRACKING=off

if [[ "${1:-}" == "--dry-run" ]]; then
    decoder=(--preset smoke --device cpu --batch 4 --gen-batch 4 --iters 1 --gen-iters 1 --warmup 1 --no-compile)
    vqgan=(--profile smoke --device cpu --batch 2 --iters 1 --warmup 1)
    limit=300
else
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
    decoder=(--preset paper --device cuda --precision bf16 --compile --batch 128 --gen-batch 64 --gen-steps 8)
    vqgan=(--profile paper --device cuda --precision bf16 --batch 16)
    limit=200
fi

status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit; a failure is recorded, not fatal
    local name=$1 seconds=$2
    shift 2
    echo "== $name" | tee -a "$OUT/device_check.log"
    local start=$SECONDS
    timeout "$seconds" "$@" >>"$OUT/device_check.log" 2>&1
    local rc=$?
    echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - start))}" >"$OUT/$name.status.json"
    [[ $rc -eq 0 ]] || { echo "   failed (rc $rc); see $OUT/device_check.log" | tee -a "$OUT/device_check.log"; status=1; }
}

step decoder "$limit" "$PY" bench/bench_decoder.py "${decoder[@]}" --out "$OUT/decoder.json"
step vqgan "$limit" "$PY" bench/bench_vqgan.py "${vqgan[@]}" --out "$OUT/vqgan.json"
if [[ -n "${REHEARSAL:-}" ]]; then
    device=cuda
    [[ "${1:-}" == "--dry-run" ]] && device=cpu
    step rehearsal 240 "$PY" tests/rehearsal.py run "$REHEARSAL" --runner commands --device "$device" \
        --out "$OUT/rehearsal.json"
fi
"$PY" bench/device_summary.py "$OUT" | tee "$OUT/device_check.md"
exit $status
