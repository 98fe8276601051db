#!/usr/bin/env bash
# Installs the system packages dagwright's tests and demo need, when missing.
set -euo pipefail
# Kubernetes 1.36 needs Go 1.26; Debian's golang-go is far older, so say so.
if ! command -v go >/dev/null || ! go env GOVERSION | grep -Eq '^go1\.(2[6-9]|[3-9][0-9])'; then
  echo "dagwright: Go >= 1.26 is needed to build the local control plane (found: $(go env GOVERSION 2>/dev/null || echo none))" >&2
  exit 1
fi
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v python3 >/dev/null || missing+=(python3 python3-venv)
# The web console's browser tests drive Debian's Chromium (never a download).
command -v chromium >/dev/null || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
  echo "dagwright: please install: ${missing[*]}" >&2
  exit 1
fi
sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
echo "dagwright: installing ${missing[*]} with apt-get" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
