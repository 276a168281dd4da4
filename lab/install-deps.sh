#!/usr/bin/env bash
# Installs everything nodefleet's tests need on a Debian 12 (bookworm) x86_64 machine, as root:
#   - Debian packages for the lab (docker.io 26 + docker-buildx from trixie, OpenSSH, qemu-user binfmt,
#     docker-registry, ...) and for lab/buildkit/build.sh (patch, xz-utils);
#   - the project itself with its `dev` extra, editable, in .venv (what README and .ci/run use).
# Idempotent, and quick when everything is already there (no apt or pip run at all).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

[ "$(id -u)" = 0 ] || { echo "install-deps: run as root" >&2; exit 1; }

# From trixie: bookworm's docker.io 20.10 cannot start privileged containers here, and trixie's openssh-server
# must match the trixie openssh-client that docker.io pulls in (shared/lab-facts.md).
trixie_packages=(
  docker.io docker-buildx docker-registry openssh-server openssh-client
  qemu-user-static binfmt-support iproute2 busybox-static openssl ca-certificates
)
# From the machine's own release: what lab/buildkit/build.sh needs besides the above.
packages=(patch xz-utils)

missing=()
for pkg in "${trixie_packages[@]}" "${packages[@]}"; do
  status=$(dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$pkg")
done
# A docker.io from bookworm (20.10) is installed but unusable: upgrade it from trixie.
docker_version=$(dpkg-query -W -f '${Version}' docker.io 2>/dev/null || true)
case "$docker_version" in 20.* | 18.*) missing+=(docker.io) ;; esac
foreign=$(dpkg --print-foreign-architectures)
for arch in arm64 armhf armel; do
  grep -qx "$arch" <<<"$foreign" || missing+=("(foreign architecture $arch)")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  ./lab/apt-setup.sh
  apt-get install -y -q -t trixie "${trixie_packages[@]}"
  apt-get install -y -q "${packages[@]}"
else
  echo "install-deps: Debian packages present"
fi

# The lab needs these at run time; fail here, by name, rather than in the middle of a test session.
for tool in dockerd docker-registry /usr/sbin/sshd qemu-aarch64 qemu-arm nsenter ip openssl update-ca-certificates; do
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

if [ -f pyproject.toml ]; then
  stamp=.venv/.install-deps.stamp
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && .venv/bin/python -c 'import nodefleet' 2>/dev/null; then
    echo "install-deps: .venv up to date"
  else
    echo "install-deps: installing the project with its dev extra into .venv"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$want" >"$stamp"
  fi
fi
echo "install-deps: done"
