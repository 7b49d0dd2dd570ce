#!/usr/bin/env bash
# The GPU checks in one prepared run (device time is short: every stage has its own time limit,
# and each writes its JSON as soon as it ends). On the GPU machine, from the repository root:
#
#     bash bench/gpu_check.sh                  # stages n5 n7 fp16
#     bash bench/gpu_check.sh n7 fp16          # only these
#
#   n5    full preset, 5 objects, the fast path against the exact path run in full (bf16 fast path)
#   n7    full preset, 7 objects, the fast path only (speed and peak memory)
#   fp16  full preset, 5 objects, fp16 fast path: its latents against the float32 exact path
#         (latent_rel_err_vs_exact; the exact decode estimated from its first chunks). n5 gives
#         the same error for bf16, the CUDA fast path's default
#
# Results: $OUT/<stage>.json and <stage>.err (./gpu_out without $OUT), device.txt, summary.txt.
# Wheels in .wheels/ (packages the machine lacks, e.g. trimesh) are installed first.
# A dry run on a CPU (fp16 runs only on a GPU, so the fp16 stage runs bf16 there):
#     PRESET=tiny DEVICE=cpu STEPS=2 DEPTH=5 HALF=bf16 bash bench/gpu_check.sh
set -u
out=${OUT:-gpu_out}
mkdir -p "$out"
preset=${PRESET:-full}
device=${DEVICE:-cuda}
steps=${STEPS:-50}
depth=${DEPTH:-8}
half=${HALF:-fp16}
limit=${STAGE_LIMIT_S:-420}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if compgen -G ".wheels/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/midi_site .wheels/*.whl \
        || { echo "installing .wheels failed" | tee "$out/summary.txt"; exit 1; }
    export PYTHONPATH=/tmp/midi_site${PYTHONPATH:+:$PYTHONPATH}
fi
{ date -u; command -v nvidia-smi >/dev/null && nvidia-smi; "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$out/device.txt" 2>&1
# what bench.run imports, checked before any slow work
"$py" -c "import bench.run, trimesh, skimage, safetensors, transformers" 2>"$out/imports.err" \
    || { echo "missing packages (see imports.err): put their wheels in .wheels/" | tee "$out/summary.txt"; exit 1; }

stage() {  # stage NAME ARGS...: one bench.run, its JSON and its exit status
    local name=$1; shift
    local t0=$SECONDS
    timeout "$limit" "$py" -m bench.run --preset "$preset" --steps "$steps" --depth "$depth" --device "$device" "$@" \
        > "$out/$name.json" 2> "$out/$name.err"
    echo "$name: exit $? in $((SECONDS - t0)) s ($*)" | tee -a "$out/summary.txt"
}

[ $# -eq 0 ] && set -- n5 n7 fp16
for s in "$@"; do
    case $s in
        n5) stage n5 --instances 5 ;;
        n7) stage n7 --instances 7 --exact skip ;;
        fp16) stage fp16 --instances 5 --dtype "$half" --exact estimate ;;
        *) echo "unknown stage $s (n5, n7, fp16)" | tee -a "$out/summary.txt"; exit 2 ;;
    esac
done
