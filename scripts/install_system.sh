#!/usr/bin/env bash
# System packages cotrain needs on a Debian 12 machine without a GPU:
#   - a Vulkan driver SAPIEN accepts (it needs Vulkan even for state observations): Mesa 25's lavapipe from
#     bookworm-backports; Debian 12's own Mesa 22 is rejected by SAPIEN.
# Video is decoded with PyAV (pip), so no system FFmpeg is needed.
# Idempotent; does nothing when not root or when a suitable lavapipe is already installed.
set -euo pipefail
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_system: not root or no apt-get: skipping system packages (need Mesa >= 25 Vulkan drivers for SAPIEN)"; exit 0
fi
mesa=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
if [ -n "$mesa" ] && dpkg --compare-versions "$mesa" ge 25; then exit 0; fi
. /etc/os-release
codename=${VERSION_CODENAME:-bookworm}
bp=/etc/apt/sources.list.d/cotrain-backports.sources
if [ ! -f "$bp" ]; then
  # Derive the backports suite from the machine's own Debian sources (the stanza that lists "$codename").
  src=$(grep -l "Suites:.*\b$codename\b" /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 || true)
  if [ -n "$src" ]; then
    awk -v c="$codename" 'BEGIN{RS=""; ORS="\n\n"} $0 ~ ("Suites:[^\n]*" c "( |\n|$)") && $0 !~ /security/ {
        gsub(/Suites:[^\n]*/, "Suites: " c "-backports"); print; exit}' "$src" > "$bp"
  else
    uri=$(grep -hE "^deb .* $codename( |$)" /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -1)
    echo "deb $uri $codename-backports main" > /etc/apt/sources.list.d/cotrain-backports.list
  fi
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq -t "$codename-backports" mesa-vulkan-drivers libvulkan1 >/dev/null
echo "install_system: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
