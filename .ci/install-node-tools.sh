#!/usr/bin/env bash
# Node tools the test suite needs: the Khronos glTF validator (tests/test_export_validator.py).
# Installs the exact version pinned in .ci/node/package-lock.json into .ci/node/node_modules (git-ignored).
# Needs node >= 18 and npm (Debian: apt-get install -y nodejs npm).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "install-node-tools: node and npm are required (apt-get install -y nodejs npm)" >&2
  exit 1
fi
npm ci --prefix "$here/node" --no-audit --no-fund --loglevel=error
node -e "require('$here/node/node_modules/gltf-validator'); console.log('gltf-validator', require('$here/node/node_modules/gltf-validator/package.json').version)"
