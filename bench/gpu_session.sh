#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md, in parts that each fit one 10-minute device call:
#
#   tests     GPU tests: nvdiffrast vs the torch twin (issue 3a), the coarse step's device syncs
#   bench     text3d bench at real size, default settings, coarse + refine, with a profiler table of each
#   variants  the coarse stage with one speed setting changed at a time (bf16, compile, TAESD, NCHW)
#   encoders  bench/encoder_bench.py: the encoder paths and the UNet alone, fp16
#
# Run from the repository root on the GPU machine, after bench/gpu_wheels.sh has filled .whl/ here:
#   bash bench/gpu_session.sh tests bench
# Results are written to $OUT (the device tool's return folder) or, without it, to bench/results.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-bench/results}"
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site" || exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" | tee -a "$out/gpu.txt"
bench() { python3 -m text3d.cli bench --size sd21-base --device cuda --out "$out" "$@" 2>&1 | tee -a "$out/bench.log"; }

for part in "$@"; do
  case "$part" in
    tests)
      python3 -m pytest -m gpu -s -q -p no:cacheprovider tests/test_raster.py tests/test_speed.py 2>&1 | tee "$out/gpu-tests.log" ;;
    bench)
      bench --stages coarse,refine --steps 50 --warmup 5 --profile ;;
    variants)
      bench --stages coarse --steps 50 --warmup 5 --dtype bf16
      bench --stages coarse --steps 50 --warmup 5 --set model.channels_last=false
      bench --stages coarse --steps 50 --warmup 5 --set model.encoder=taesd
      bench --stages coarse --steps 50 --warmup 30 --set model.compile=reduce-overhead ;;
    encoders)
      python3 bench/encoder_bench.py --device cuda --dtype fp16 --repeats 20 2>&1 | tee "$out/encoders.log" ;;
    *) echo "unknown part $part (tests, bench, variants, encoders)"; exit 2 ;;
  esac
done
