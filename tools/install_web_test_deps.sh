#!/usr/bin/env bash
# What tests/test_web.py and tools/web_speed.py need beyond the Python packages: Chromium (Debian's, driven by
# Playwright by path) and onnxruntime-web at the release pinned in src/u2deploy/export/web/package.json, installed
# into .web/node_modules (git-ignored). Idempotent: anything already present is left alone, quietly.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get install -y -q "$@" >/dev/null 2>&1 || { as_root apt-get update -q >/dev/null && as_root apt-get install -y -q "$@" >/dev/null; }
}

command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || apt_install chromium
command -v npm >/dev/null 2>&1 || apt_install npm

pin=$(python3 -c 'import json; print(json.load(open("src/u2deploy/export/web/package.json"))["dependencies"]["onnxruntime-web"])')
have=$(python3 -c 'import json; print(json.load(open(".web/node_modules/onnxruntime-web/package.json"))["version"])' 2>/dev/null || true)
if [ "$have" != "$pin" ]; then
  mkdir -p .web
  cp src/u2deploy/export/web/package.json .web/package.json
  npm install --prefix .web --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
  echo "installed onnxruntime-web $pin into .web/node_modules"
fi
