#!/usr/bin/env bash
# The Debian packages the tests drive for real: Prometheus (prometheus, promtool) and headless
# Chromium with its WebDriver (chromium, chromium-driver) for the console's browser tests.
# Installed with apt-get when missing (CI runs as root); otherwise say what to install.
set -euo pipefail

missing=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-liberation)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)

if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-tools: missing ${missing[*]}; install them (Debian: apt-get install -y --no-install-recommends ${missing[*]})" >&2
  exit 1
fi
echo "ensure-tools: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
# The prometheus package enables a system service; the tests start their own and stop it.
command -v promtool >/dev/null && command -v chromium >/dev/null && command -v chromedriver >/dev/null
