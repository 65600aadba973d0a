#!/usr/bin/env bash
# System packages the GUI tests need: Xvfb (xvfb-run) and the Qt 6 xcb / OpenGL libraries.
# Debian/Ubuntu (apt-get). Run as root or with sudo available; .ci/run calls it too.
set -euo pipefail

PACKAGES=(
  xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0
  libxcb-xfixes0 libdbus-1-3 libfontconfig1
)

if ! command -v apt-get >/dev/null 2>&1; then
  if command -v xvfb-run >/dev/null 2>&1; then
    echo "install_system_deps: no apt-get here; xvfb-run is present, assuming the Qt xcb libraries are too"
    exit 0
  fi
  echo "install_system_deps: no apt-get here; install Xvfb (xvfb-run) and these libraries with your" \
    "package manager: ${PACKAGES[*]}" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install_system_deps: run as root, or install sudo" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "install_system_deps: xvfb-run and the Qt xcb libraries are installed"
