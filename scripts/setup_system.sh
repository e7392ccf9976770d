#!/usr/bin/env bash
# Installs the Debian/Ubuntu system libraries arspine's stack needs, or says exactly what to
# run when it cannot (not root and no password-less sudo).
#   open3d: libusb-1.0-0, libgomp1 | VTK offscreen (EGL) and on Xvfb: libegl1 libgl1 mesa
#   viewer: xvfb + Qt's xcb libraries (DESIGN.md "Real components")
set -euo pipefail

PKGS=(libusb-1.0-0 libgomp1 libegl1 libgl1 libgl1-mesa-dri libglx-mesa0 libegl-mesa0
      xvfb xauth libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
      libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0
      libxcb-xkb1 libxcb-cursor0 libfontconfig1 libdbus-1-3 libxrender1 libx11-xcb1)

PY="${1:-python3}"
if ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then
  ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  PKGS+=("python${ver}-venv")
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "setup: not a Debian/Ubuntu system; install the equivalents of: ${PKGS[*]}" >&2
  exit 0
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    if apt-cache show "$p" >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
      missing+=("$p")
    fi
  fi
done
[ ${#missing[@]} -eq 0 ] && { echo "setup: system libraries present"; exit 0; }

echo "setup: installing system libraries: ${missing[*]}"
if [ "$(id -u)" = 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "setup: missing system libraries and no root. Run this, then run make again:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
  # Names differ between releases (e.g. libxcb-cursor0); install what exists and report.
  for p in "${missing[@]}"; do
    $SUDO apt-get install -y -qq --no-install-recommends "$p" \
      || echo "setup: warning: could not install $p" >&2
  done
fi
