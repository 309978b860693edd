#!/usr/bin/env bash
# Install the Debian packages listed in scripts/system-packages.txt that are missing.
# Needs root and apt-get; elsewhere it names what to install and exits 0, and the
# tests that need a missing package skip (or fail under MODALBALANCE_REQUIRE_DATA=1).
set -euo pipefail
cd "$(dirname "$0")"

missing=()
while read -r package command; do
    [[ -z "$package" || "$package" == \#* ]] && continue
    command -v "$command" >/dev/null 2>&1 || missing+=("$package")
done < system-packages.txt

[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "missing system packages: ${missing[*]}; install them with your package manager (Debian: apt-get install ${missing[*]})" >&2
fi
