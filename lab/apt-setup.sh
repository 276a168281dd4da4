#!/usr/bin/env bash
# Adds Debian trixie and unstable (deb and deb-src) as low-priority apt sources and the arm foreign
# architectures, so the lab can take docker.io 26 / docker-buildx from trixie and arm packages,
# without upgrading anything else on a Debian 12 machine. Idempotent. Run as root.
set -euo pipefail
src=/etc/apt/sources.list.d/nodefleet-lab.sources
pref=/etc/apt/preferences.d/nodefleet-lab
want_src='Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: trixie unstable
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg'
want_pref='Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: *
Pin: release a=unstable
Pin-Priority: 50'
changed=0
if [ "$(cat "$src" 2>/dev/null)" != "$want_src" ]; then printf '%s\n' "$want_src" >"$src"; changed=1; fi
if [ "$(cat "$pref" 2>/dev/null)" != "$want_pref" ]; then printf '%s\n' "$want_pref" >"$pref"; changed=1; fi
# Read once, not piped into `grep -q`: grep quitting early may kill dpkg with SIGPIPE, and under pipefail that read
# as "architecture missing" and forced an apt-get update on every run.
foreign=$(dpkg --print-foreign-architectures)
for arch in arm64 armhf armel; do
  if ! grep -qx "$arch" <<<"$foreign"; then dpkg --add-architecture "$arch"; changed=1; fi
done
stamp=/var/lib/apt/nodefleet-lab.updated
if [ "$changed" = 1 ] || [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +720)" ]; then
  # An unrelated index may fail ("Mirror sync in progress?"); what we need is checked by the installs.
  apt-get update -q || echo "apt-setup: apt-get update reported errors; continuing" >&2
  touch "$stamp"
fi
