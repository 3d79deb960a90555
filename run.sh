#!/usr/bin/env bash
# wangge set-up and entry points. On a fresh Debian machine this installs what is missing
# (Debian packages through apt-get, the Python package into .venv, the map assets), then:
#   ./run.sh demo   start the embedded PostGIS, migrate, load the demo district, serve the API
#   ./run.sh test   run the whole test suite against a real embedded cluster
#   ./run.sh bootstrap   only install
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(postgresql-15 postgresql-15-postgis-3 postgresql-15-pgrouting chromium wrk
              fonts-wqy-zenhei gdal-bin haproxy)
# npm fetches the map assets; this machine kind ships Node, else Debian's npm is installed.
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(npm)
VENV=.venv

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

bootstrap() {
  if ! dpkg -s "${APT_PACKAGES[@]}" >/dev/null 2>&1; then
    echo "== installing Debian packages: ${APT_PACKAGES[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${APT_PACKAGES[@]}" >/dev/null
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    python3 -m venv "$VENV"
  fi
  local stamp; stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$stamp" ]; then
    echo "== installing the Python package"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e '.[dev]'
    echo "$stamp" > "$VENV/.installed"
  fi
  "$VENV/bin/python" -m maps.assets
}

cmd=${1:-help}; shift || true
case "$cmd" in
  bootstrap) bootstrap ;;
  demo) bootstrap; exec "$VENV/bin/wangge" demo "$@" ;;
  test) bootstrap; exec "$VENV/bin/pytest" "$@" ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
