#!/usr/bin/env bash
# Installs the Debian/Ubuntu system libraries arspine's stack needs, or says exactly what to
# run when it cannot (not root and no password-less sudo).
#   open3d: libusb-1.0-0, libgomp1 | VTK offscreen (EGL) and on Xvfb: libegl1 libgl1 mesa
#   viewer: xvfb + Qt's xcb libraries (DESIGN.md "Real components") | venv: pythonX.Y-venv
# Usage: scripts/setup_system.sh [PYTHON]      ARSPINE_SETUP_DRY_RUN=1 only prints the plan.
set -euo pipefail

PKGS=(libusb-1.0-0 libgomp1 libegl1 libgl1 libgl1-mesa-dri libglx-mesa0 libegl-mesa0
      xvfb xauth libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
      libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0
      libxcb-xkb1 libxcb-cursor0 libfontconfig1 libdbus-1-3 libxrender1 libx11-xcb1)

PY="${1:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "setup: no Python interpreter '$PY'; install Python 3.10+ (Debian: apt-get install python3)" >&2
  exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "setup: $PY is $("$PY" -V 2>&1); arspine needs Python 3.10 or newer" >&2
  exit 1
fi
if ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then
  ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  PKGS+=("python${ver}-venv")
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "setup: not a Debian/Ubuntu system; make sure the equivalents of these are installed:"
  echo "  ${PKGS[*]}"
  exit 0
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: system libraries present"
  exit 0
fi

if [ "$(id -u)" = 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "setup: missing system libraries and no root or password-less sudo. Run this, then" \
       "run make again:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "setup: installing system libraries: ${missing[*]}"
if [ "${ARSPINE_SETUP_DRY_RUN:-0}" = 1 ]; then
  echo "setup: dry run: would run: ${SUDO:+$SUDO }apt-get update &&" \
       "${SUDO:+$SUDO }apt-get install -y --no-install-recommends ${missing[*]}"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Fresh images ship without package lists: update before asking apt what exists.
$SUDO apt-get update -qq
known=()
for p in "${missing[@]}"; do
  # Names differ between releases (e.g. libxcb-cursor0); install what this one has.
  if apt-cache show "$p" >/dev/null 2>&1; then
    known+=("$p")
  else
    echo "setup: warning: no package $p in this release; skipping it" >&2
  fi
done
[ ${#known[@]} -eq 0 ] || $SUDO apt-get install -y -qq --no-install-recommends "${known[@]}"
echo "setup: system libraries installed"
