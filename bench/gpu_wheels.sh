#!/usr/bin/env bash
# Download, on a machine with the package registries, the wheels a bare GPU machine lacks to run
# bench/gpu_session.sh: diffusers, nvdiffrast (as diffrp-nvdiffrast, JIT-built there with nvcc + ninja), trimesh.
# They land in .whl/ (keep it out of git: echo /.whl/ >> .git/info/exclude). Targets CPython 3.12, x86-64 Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl "diffusers==${DIFFUSERS_VERSION:-0.42.1}" "diffrp-nvdiffrast" "trimesh" "$@"
ls -la .whl
