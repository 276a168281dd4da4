#!/usr/bin/env bash
# Installs everything nodefleet's tests need on a Debian 12 (bookworm) x86_64 machine, as root:
#   - the Debian packages of lab/install-plan.txt: docker.io 26, docker-cli and docker-buildx from trixie, the rest
#     (OpenSSH, qemu-user binfmt, docker-registry, containerd, runc, shellcheck, debootstrap, python3-venv, ...)
#     from bookworm; nothing else moves to trixie (lab/install-packages.sh);
#   - the project itself with its `dev` extra, editable, in .venv (what README and .ci/run use).
# Idempotent, and quick when everything is already there (no apt or pip run at all).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

[ "$(id -u)" = 0 ] || { echo "install-deps: run as root" >&2; exit 1; }

# Debian packages: lab/install-plan.txt names each with the release it comes from. Only docker.io, docker-cli and
# docker-buildx come from trixie (by name, PACKAGE/trixie); everything else, their dependencies included, stays on
# bookworm. lab/install-packages.sh simulates the install first and refuses one that would take anything else
# from trixie or unstable (a plain `apt-get install -t trixie` upgraded 124 packages to Debian 13, libc6 and
# python3 among them).
missing=$(./lab/install-packages.sh --missing)
foreign=$(dpkg --print-foreign-architectures)
for arch in arm64 armhf armel; do
  grep -qx "$arch" <<<"$foreign" || missing+=" (foreign architecture $arch)"
done
if [ -n "$missing" ]; then
  echo "install-deps: installing: $(tr '\n' ' ' <<<"$missing")"
  ./lab/apt-setup.sh
  ./lab/install-packages.sh
else
  echo "install-deps: Debian packages present"
fi

# The lab needs these at run time; fail here, by name, rather than in the middle of a test session.
for tool in dockerd docker-registry /usr/sbin/sshd qemu-aarch64-static qemu-arm-static nsenter ip openssl update-ca-certificates; do
  command -v "$tool" >/dev/null || { echo "install-deps: $tool still missing after apt-get install" >&2; exit 1; }
done
[ -x /usr/libexec/docker/cli-plugins/docker-buildx ] || { echo "install-deps: docker-buildx plugin missing" >&2; exit 1; }

# A second buildx for the end-to-end tests: Debian unstable's (0.29.x), unpacked beside the lab cache and
# never installed over trixie's; tests/e2e run `up`/`status`/`down` with each (users run 0.13 to 0.3x).
buildx_dir=${NODEFLEET_LAB_CACHE:-/var/cache/nodefleet-lab}/buildx/unstable
if [ ! -x "$buildx_dir/docker-buildx" ]; then
  echo "install-deps: fetching docker-buildx from unstable for the second-version tests"
  ./lab/apt-setup.sh
  work=$(mktemp -d)
  (cd "$work" && apt-get download -q docker-buildx/unstable >/dev/null)
  dpkg-deb -x "$work"/docker-buildx_*.deb "$work/root"
  mkdir -p "$buildx_dir"
  install -m 0755 "$work/root/usr/libexec/docker/cli-plugins/docker-buildx" "$buildx_dir/docker-buildx.new"
  mv "$buildx_dir/docker-buildx.new" "$buildx_dir/docker-buildx"
  rm -rf "$work"
fi
"$buildx_dir/docker-buildx" version >/dev/null || { echo "install-deps: $buildx_dir/docker-buildx does not run" >&2; exit 1; }

# A Python >= 3.11 that can make a venv: python3 on PATH first (so .venv runs the interpreter the user runs, e.g.
# pyenv's), else Debian's /usr/bin/python3 (with python3-venv, installed above).
make_venv() {
  local py
  for py in python3 /usr/bin/python3; do
    command -v "$py" >/dev/null || continue
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || continue
    rm -rf .venv
    if "$py" -m venv .venv >/dev/null 2>&1 && .venv/bin/python -m pip --version >/dev/null 2>&1; then
      echo "install-deps: .venv made with $("$py" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
      return 0
    fi
    echo "install-deps: $py -m venv failed; trying the next Python" >&2
  done
  rm -rf .venv
  echo "install-deps: no Python >= 3.11 could make .venv (python3-venv missing?)" >&2
  return 1
}

if [ -f pyproject.toml ]; then
  stamp=.venv/.install-deps.stamp
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && .venv/bin/python -c 'import nodefleet' 2>/dev/null; then
    echo "install-deps: .venv up to date"
  else
    echo "install-deps: installing the project with its dev extra into .venv"
    .venv/bin/python -m pip --version >/dev/null 2>&1 || make_venv
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$want" >"$stamp"
  fi
fi
echo "install-deps: done"
