#!/usr/bin/env bash
# Installs the missing Debian packages of lab/install-plan.txt on Debian 12 (bookworm), as root, in one apt-get run:
# the few packages the plan names `trixie` as PACKAGE/trixie, every other one at the machine's own (bookworm)
# candidate version. The run is simulated first (apt-get -s) and refused when any package the plan does not name
# `trixie` would come from trixie or unstable, so the lab never upgrades the machine towards Debian 13.
#
#   lab/install-packages.sh              install what is missing
#   lab/install-packages.sh --simulate   print the simulation (apt-get -s) of that install and check it; installs nothing
#   lab/install-packages.sh --missing    print what is missing, one `RELEASE PACKAGE` a line; no apt at all
#
# Exit: 0 done (or nothing to do), 1 failure (or a simulation that takes unnamed packages from trixie/unstable),
# 2 bad usage or plan.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
plan=${NODEFLEET_INSTALL_PLAN:-$here/install-plan.txt}
export DEBIAN_FRONTEND=noninteractive

mode=install
case "${1:-}" in
  "") ;;
  --simulate) mode=simulate ;;
  --missing) mode=missing ;;
  *)
    echo "usage: $0 [--simulate|--missing]" >&2
    exit 2
    ;;
esac

trixie=()
bookworm=()
while read -r release pkg _; do
  case "$release" in
    "" | "#"*) continue ;;
    trixie) trixie+=("$pkg") ;;
    bookworm) bookworm+=("$pkg") ;;
    *)
      echo "install-packages: $plan: unknown release '$release' (trixie or bookworm)" >&2
      exit 2
      ;;
  esac
done <"$plan"

is_installed() {
  [ "$(dpkg-query -W -f '${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

missing_trixie=()
for pkg in "${trixie[@]}"; do
  version=$(dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null || true)
  # bookworm's docker.io (20.10) counts as missing: it cannot start the lab's privileged containers.
  if ! is_installed "$pkg" || { [ "$pkg" = docker.io ] && [[ "$version" == 20.* || "$version" == 18.* ]]; }; then
    missing_trixie+=("$pkg")
  fi
done
missing_bookworm=()
for pkg in "${bookworm[@]}"; do
  is_installed "$pkg" || missing_bookworm+=("$pkg")
done

if [ "$mode" = missing ]; then
  for pkg in "${missing_trixie[@]}"; do echo "trixie $pkg"; done
  for pkg in "${missing_bookworm[@]}"; do echo "bookworm $pkg"; done
  exit 0
fi
if [ "${#missing_trixie[@]}" -eq 0 ] && [ "${#missing_bookworm[@]}" -eq 0 ]; then
  echo "install-packages: every package of $(basename "$plan") is installed"
  exit 0
fi

[ "$(id -u)" = 0 ] || {
  echo "install-packages: run as root" >&2
  exit 1
}
"$here/apt-setup.sh"

args=()
for pkg in "${missing_trixie[@]}"; do args+=("$pkg/trixie"); done
if [ "${#missing_bookworm[@]}" -gt 0 ]; then
  # The policy candidate of each, as PACKAGE=VERSION, after the trixie ones: apt's PACKAGE/trixie also moves a
  # dependency's candidate to trixie when it sees fit, and only a later, exact version request moves it back.
  pinned=$(apt-cache policy "${missing_bookworm[@]}" | awk '
    /^[^ ]/ { pkg = $1; sub(/:$/, "", pkg) }
    /^  Candidate:/ { print pkg "=" $2 }')
  for pkg in "${missing_bookworm[@]}"; do
    spec=$(grep -m1 "^$pkg=" <<<"$pinned" || true)
    if [ -z "$spec" ] || [ "$spec" = "$pkg=(none)" ]; then
      echo "install-packages: $pkg has no installable version (apt-cache policy $pkg)" >&2
      exit 1
    fi
    args+=("$spec")
  done
fi

# A package comes from trixie or unstable when none of the releases apt lists for its version is Debian 12.
named=" ${trixie[*]} "
sim=$(apt-get -s -q --no-install-recommends install "${args[@]}" 2>&1) || {
  printf '%s\n' "$sim" >&2
  echo "install-packages: apt-get -s install ${args[*]} failed" >&2
  exit 1
}
unnamed=$(awk -v named="$named" '
  /^Inst / {
    name = $2; sub(/:.*/, "", name)
    origins = $0; sub(/^[^(]*\(/, "", origins)
    if (origins ~ /Debian(-Security)?:12/ || origins !~ /Debian/) next
    if (index(named, " " name " ") == 0) print
  }' <<<"$sim")

if [ "$mode" = simulate ]; then
  echo "install-packages: apt-get -s -q --no-install-recommends install ${args[*]}"
  printf '%s\n' "$sim"
fi
if [ -n "$unnamed" ]; then
  echo "install-packages: refusing: these packages, not named 'trixie' in $(basename "$plan"), would come from trixie/unstable:" >&2
  printf '  %s\n' "$unnamed" >&2
  exit 1
fi
[ "$mode" = simulate ] && exit 0

echo "install-packages: apt-get install ${args[*]}"
apt-get install -y -q --no-install-recommends "${args[@]}"
