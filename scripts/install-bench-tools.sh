#!/usr/bin/env bash
# Install the programs `python -m bench` drives: wrk (load), haproxy and nginx (reference proxies and the
# upstream), redis-server (the Redis targets and the shared rate limit figure), taskset (CPU pinning),
# valgrind (callgrind: the instruction counts a request).
# Idempotent: when everything is present it only checks and exits.
set -euo pipefail

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v haproxy >/dev/null || missing+=(haproxy)
# nginx lives in /usr/sbin, which a non-root PATH may lack.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v taskset >/dev/null || missing+=(util-linux)
command -v callgrind_control >/dev/null || missing+=(valgrind)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "install-bench-tools: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian packages start system services; the bench runs its own instances on free ports.
  for svc in nginx haproxy redis-server; do
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || $SUDO service "$svc" stop >/dev/null 2>&1 || true
  done
fi

{ wrk -v 2>&1 || true; } | grep -q "^wrk"  # wrk -v exits 1 by design
haproxy -v >/dev/null
PATH="$PATH:/usr/sbin" nginx -v 2>/dev/null
redis-server --version >/dev/null
taskset -V >/dev/null
valgrind --version >/dev/null
