#!/usr/bin/env bash
# Builds the lab's image root filesystems from Debian's archive alone (no registry on the internet):
#   $CACHE/buildkit-v0.13.2/{amd64,arm64,armv7}.tar  BuildKit built from trixie's docker.io source package
#   $CACHE/busybox/{amd64,arm64,armhf,armel}.tar      busybox-static of each architecture, applets linked
# Each tar is a root filesystem for `docker import --platform linux/<p>`. Idempotent: a second run
# prints "cached" and does nothing. Run as root on Debian 12 x86_64 (calls lab/apt-setup.sh first).
# Quiet: one line per step on stdout; everything else goes to $CACHE/.artifacts.log, whose tail is shown
# on stderr when a step fails. What went into the tars (package versions, SHA256): $CACHE/.artifacts.info.
# Usage: build.sh [--force]     NODEFLEET_LAB_CACHE overrides the cache dir (/var/cache/nodefleet-lab).
set -Eeuo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lab_dir=$(dirname "$here")
cache=${NODEFLEET_LAB_CACHE:-/var/cache/nodefleet-lab}
bk_version=v0.13.2
bk_pkg=github.com/moby/buildkit
bk_out=$cache/buildkit-$bk_version
bb_out=$cache/busybox
stamp=$cache/.artifacts.stamp
logfile=$cache/.artifacts.log
infofile=$cache/.artifacts.info
work=$cache/.artifacts-work
downloads=$cache/downloads
# Image name -> GOARCH/GOARM of its buildkitd; busybox image name -> Debian architecture (same name).
bk_images=(amd64 arm64 armv7)
bb_images=(amd64 arm64 armhf armel)
# Debian tags buildkitd's upstream Dockerfile passes; they are no-ops without cgo but keep parity.
bk_tags="osusergo netgo static_build seccomp"

# log() goes to stderr until the log file is opened, then only to the log; the step lines go to fd 3.
log() { printf 'build.sh: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

force=0
case "${1:-}" in
"") ;;
--force) force=1 ;;
-h | --help)
  sed -n '2,9s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
  exit 0
  ;;
*)
  echo "usage: $0 [--force]" >&2
  exit 2
  ;;
esac

outputs() {
  local i
  for i in "${bk_images[@]}"; do echo "$bk_out/$i.tar"; done
  for i in "${bb_images[@]}"; do echo "$bb_out/$i.tar"; done
}

# The key covers everything that decides the result and is known without asking apt: this script
# and the package list. A new archive version alone does not trigger a rebuild (use --force).
key=$(cat "$here/build.sh" "$here/go-packages.txt" | sha256sum | cut -d' ' -f1)

is_cached() {
  [ "$force" = 0 ] || return 1
  [ "$(cat "$stamp" 2>/dev/null)" = "$key" ] || return 1
  local f
  for f in $(outputs); do [ -s "$f" ] || return 1; done
}

if is_cached; then
  echo cached
  exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (it installs apt sources, chroots to check the images)"
[ "$(uname -m)" = x86_64 ] || die "needs an x86_64 machine (the images carry a native x86_64 runc and buildctl)"

mkdir -p "$cache"
exec 9>"$cache/.artifacts.lock"
if ! flock -n 9; then
  log "another build.sh holds $cache/.artifacts.lock; waiting"
  flock 9
fi
if is_cached; then # built by whoever held the lock
  echo cached
  exit 0
fi

# From here on stdout and stderr go to the log; fd 3 and 4 are the caller's stdout and stderr.
exec 3>&1 4>&2 >"$logfile" 2>&1
log "started $(date -u +%Y-%m-%dT%H:%M:%SZ), key $key"
current_step=startup
started=$SECONDS
step_started=$SECONDS
step_done() { printf ' ok (%ss)\n' "$((SECONDS - step_started))" >&3; }
step() { # one line per step on stdout: "build.sh: STEP ... ok (Ns)"
  [ "$current_step" = startup ] || step_done
  current_step=$1
  step_started=$SECONDS
  log "[$((SECONDS - started))s] ===== $1"
  printf 'build.sh: %s ...' "$1" >&3
}
on_exit() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    [ "$current_step" = startup ] || printf ' FAILED\n' >&3
    {
      printf 'build.sh: FAILED at step: %s (exit %s); partial work left in %s\n' "$current_step" "$rc" "$work"
      printf 'build.sh: the last lines of %s:\n' "$logfile"
      tail -n 25 "$logfile" | sed 's/^/  | /'
    } >&4
  fi
}
trap on_exit EXIT

step "checking tools"
need_pkgs=()
command -v patch >/dev/null || need_pkgs+=(patch)
command -v xz >/dev/null || need_pkgs+=(xz-utils)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2
fi
for tool in apt-get dpkg-deb tar sha256sum flock chroot od qemu-aarch64-static qemu-arm-static; do
  command -v "$tool" >/dev/null || die "missing $tool (qemu-*-static: lab/install-deps.sh installs qemu-user-static)"
done
[ -x /usr/lib/apt/apt-helper ] || die "missing /usr/lib/apt/apt-helper (package apt)"

step "apt sources (lab/apt-setup.sh)"
"$lab_dir/apt-setup.sh" >&2

rm -f "$stamp"
rm -rf "$work"
mkdir -p "$work" "$downloads/src" "$downloads/debs"

# Reads apt's --print-uris lines ('URI' FILE SIZE SHA256:HEX) on stdin, makes sure DIR/FILE exists with
# that hash (downloading it with apt's own helper if not), prints the local paths. apt's exit code is
# not trusted: the hash from the signed index is.
fetch() {
  local dir=$1 uri file _size hash want
  while read -r uri file _size hash; do
    uri=${uri#\'}
    uri=${uri%\'}
    case "$file" in *.dsc) continue ;; esac # the mirror lacks docker.io's .dsc; not needed
    case "$hash" in SHA256:*) want=${hash#SHA256:} ;; *) die "no SHA256 for $file in apt's index" ;; esac
    if [ ! -f "$dir/$file" ] || [ "$(sha256sum <"$dir/$file" | cut -d' ' -f1)" != "$want" ]; then
      rm -f "$dir/$file.part"
      /usr/lib/apt/apt-helper -o APT::Sandbox::User=root download-file "$uri" "$dir/$file.part" "SHA256:$want" \
        >"$work/download.log" 2>&1 || die "download failed: $uri: $(tail -3 "$work/download.log")"
      [ "$(sha256sum <"$dir/$file.part" | cut -d' ' -f1)" = "$want" ] || die "SHA256 mismatch: $file"
      mv -f "$dir/$file.part" "$dir/$file"
    fi
    printf '%s\n' "$dir/$file"
  done
}

step "downloading docker.io source from trixie (carries BuildKit)"
apt-get source --print-uris docker.io/trixie 2>"$work/apt-source.err" | grep "^'" >"$work/src.uris" ||
  die "apt-get source --print-uris docker.io/trixie found nothing (deb-src trixie missing?): $(cat "$work/apt-source.err")"
fetch "$downloads/src" <"$work/src.uris" >"$work/src.files"
pick() { # the one listed file whose name matches the glob $1
  local f n=0 found=
  while read -r f; do
    # shellcheck disable=SC2053
    if [[ $(basename "$f") == $1 ]]; then
      found=$f
      n=$((n + 1))
    fi
  done <"$2"
  [ "$n" = 1 ] || die "expected one file like $1 in $2, found $n"
  printf '%s\n' "$found"
}
orig=$(pick 'docker.io_*.orig.tar.xz' "$work/src.files")
orig_buildkit=$(pick 'docker.io_*.orig-buildkit.tar.xz' "$work/src.files")
orig_cli=$(pick 'docker.io_*.orig-cli.tar.xz' "$work/src.files")
debian_tar=$(pick 'docker.io_*.debian.tar.xz' "$work/src.files")

step "downloading Go 1.24, the Go libraries, runc and busybox-static debs"
runtime_pkgs=(runc:amd64 libc6:amd64 libseccomp2:amd64 libgcc-s1:amd64)
mapfile -t go_pkgs < <(grep -v -e '^#' -e '^[[:space:]]*$' "$here/go-packages.txt")
all_pkgs=(golang-1.24-go:amd64 golang-1.24-src "${go_pkgs[@]}" "${runtime_pkgs[@]}")
for a in "${bb_images[@]}"; do all_pkgs+=("busybox-static:$a"); done
apt-get download --print-uris "${all_pkgs[@]/%//trixie}" 2>"$work/apt-download.err" | grep "^'" >"$work/debs.uris" ||
  die "apt-get download --print-uris failed: $(cat "$work/apt-download.err")"
[ "$(wc -l <"$work/debs.uris")" = "${#all_pkgs[@]}" ] ||
  die "apt resolved $(wc -l <"$work/debs.uris") of ${#all_pkgs[@]} packages: $(cat "$work/apt-download.err")"
fetch "$downloads/debs" <"$work/debs.uris" >"$work/debs.files"
declare -A deb_by_name=() # "package:arch" and "package" -> local .deb
while read -r f; do
  # shellcheck disable=SC2016 # dpkg's own ${Field} syntax
  name_arch=$(dpkg-deb --show --showformat='${Package}:${Architecture}' "$f")
  deb_by_name[$name_arch]=$f
  deb_by_name[${name_arch%%:*}]=$f
done <"$work/debs.files"
deb_of() { # local .deb of package $1 (name[:arch])
  [ -n "${deb_by_name[$1]:-}" ] || die "no downloaded .deb for $1"
  printf '%s\n' "${deb_by_name[$1]}"
}

step "unpacking the docker.io source and applying Debian's patches"
tree=$work/tree
mkdir -p "$tree"
tar -C "$tree" -xJf "$orig" --strip-components=2 # ./moby-moby-<commit>/engine/...
tar -C "$tree" -xJf "$orig_buildkit"
tar -C "$tree" -xJf "$orig_cli"
tar -C "$tree" -xJf "$debian_tar"
for d in engine buildkit cli debian/patches; do [ -d "$tree/$d" ] || die "source tree lacks $d/"; done
while read -r p; do
  case "$p" in '' | '#'*) continue ;; esac
  patch -d "$tree" -p1 --batch --forward --quiet --no-backup-if-mismatch <"$tree/debian/patches/$p" ||
    die "Debian patch $p does not apply"
done <"$tree/debian/patches/series"
src_version=$(sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' "$tree/debian/changelog")
vendored=$(awk '$1 == "github.com/moby/buildkit" {print $2; exit}' "$tree/engine/vendor.mod")
[ "$vendored" = "$bk_version" ] ||
  die "docker.io $src_version carries BuildKit '${vendored:-?}', not $bk_version: update bk_version (and the lab contract)"
# Timestamps inside the tars: the date of this docker.io upload, so the same inputs give the same bytes.
epoch=$(date -d "$(grep -m1 '^ -- ' "$tree/debian/changelog" | sed 's/.*>  //')" +%s)

step "setting up GOPATH and Go 1.24 (Debian packages, GOPATH mode as debian/rules)"
gopath=$work/gopath
mkdir -p "$gopath/src/github.com/moby" "$gopath/src/github.com/docker"
mv "$tree/buildkit" "$gopath/src/github.com/moby/buildkit"
mv "$tree/engine" "$gopath/src/github.com/docker/docker"
mv "$tree/cli" "$gopath/src/github.com/docker/cli"
gocode=$work/gocode
mkdir -p "$gocode"
for p in golang-1.24-go:amd64 golang-1.24-src "${go_pkgs[@]}"; do dpkg-deb -x "$(deb_of "$p")" "$gocode"; done
unset GOOS GOARCH GOARM GOAMD64 GOBIN GOEXPERIMENT
export GOROOT=$gocode/usr/lib/go-1.24
export PATH=$GOROOT/bin:$PATH
export GOPATH=$gopath:$gocode/usr/share/gocode
export GO111MODULE=off GOFLAGS="" GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 GOENV=off GOTELEMETRY=off
# The compile cache survives in the cache dir: a rebuild after a change to this script takes seconds.
export GOCACHE=$cache/go-build
go_version=$(go version)
case "$go_version" in *" go1.24"*) ;; *) die "unexpected Go: $go_version" ;; esac

elf_machine() { # e_machine of an ELF file: 62 x86_64, 183 aarch64, 40 arm
  od -An -tu2 -j18 -N2 "$1" | tr -d ' '
}
check_binary() { # FILE EXPECTED_E_MACHINE RUNNER(empty = native)
  local m out
  m=$(elf_machine "$1")
  [ "$m" = "$2" ] || die "$1 has ELF machine $m, expected $2"
  # buildkitd reads /proc at start (go-fuse), so this runs outside any chroot; stderr has disk-size noise.
  # shellcheck disable=SC2086
  out=$($3 "$1" --version 2>/dev/null) || die "$1 --version failed"
  [[ $out == *" $bk_version"* ]] || die "$1 --version says '$out', not $bk_version"
}

ldflags="-s -w -X $bk_pkg/version.Version=$bk_version -X $bk_pkg/version.Revision=debian-$src_version -X $bk_pkg/version.Package=$bk_pkg"
bins=$work/bin
cd "$gopath/src/$bk_pkg" # not in a subshell, so that a failure names its step
step "go build buildctl (linux/amd64)"
go build -trimpath -ldflags "$ldflags" -o "$bins/amd64/buildctl" ./cmd/buildctl
for img in "${bk_images[@]}"; do
  case "$img" in
  amd64) env=(GOARCH=amd64) ;;
  arm64) env=(GOARCH=arm64) ;;
  armv7) env=(GOARCH=arm GOARM=7) ;;
  esac
  step "go build buildkitd (${env[*]})"
  env "${env[@]}" go build -trimpath -tags "$bk_tags" -ldflags "$ldflags" -o "$bins/$img/buildkitd" ./cmd/buildkitd
done
cd "$work"
step "checking the binaries (ELF machine, --version)"
check_binary "$bins/amd64/buildctl" 62 ""
check_binary "$bins/amd64/buildkitd" 62 ""
check_binary "$bins/arm64/buildkitd" 183 qemu-aarch64-static
check_binary "$bins/armv7/buildkitd" 40 qemu-arm-static

# A merged-/usr root. Debian packages are unpacked elsewhere and copied in with
# --keep-directory-symlink, so a package's /lib never replaces the /lib symlink.
make_skeleton() {
  local r=$1 d
  mkdir -p "$r"/usr/{bin,sbin,lib,lib64} "$r"/{etc,root,tmp,proc,sys,dev,run,home} "$r"/var/{tmp,lib}
  for d in bin sbin lib lib64; do ln -s "usr/$d" "$r/$d"; done
  chmod 1777 "$r/tmp" "$r/var/tmp"
  chmod 0700 "$r/root"
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$r/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$r/etc/group"
}
copy_into() { # SRC_DIR ROOT
  tar -C "$1" -c . | tar -C "$2" -x --keep-directory-symlink
}
install_busybox() { # ROOT DEB RUNNER(empty = native): busybox at /usr/bin/busybox, one symlink per applet
  local r=$1 stage applet
  stage=$(mktemp -d "$work/bb.XXXXXX")
  dpkg-deb -x "$2" "$stage"
  if [ -f "$stage/usr/bin/busybox" ]; then cp "$stage/usr/bin/busybox" "$r/usr/bin/busybox"; else cp "$stage/bin/busybox" "$r/usr/bin/busybox"; fi
  rm -rf "$stage"
  # shellcheck disable=SC2086
  $3 "$r/usr/bin/busybox" --list-full >"$work/applets" || die "busybox --list-full failed for $2"
  [ -s "$work/applets" ] || die "busybox lists no applets ($2)"
  while read -r applet; do
    [[ $applet == */* ]] || continue # /linuxrc: only for an initrd
    # bin/x and usr/bin/x are the same file in a merged-/usr root: keep the first.
    if [ -e "$r/$applet" ] || [ -L "$r/$applet" ]; then continue; fi
    mkdir -p "$(dirname "$r/$applet")"
    ln -s /usr/bin/busybox "$r/$applet"
  done <"$work/applets"
}
write_tar() { # ROOT OUT: same bytes for the same inputs
  tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -C "$1" -cf "$2" .
}

step "assembling the BuildKit root filesystems"
# Native x86_64 runc (an emulated one fails) with the libraries it links, from trixie.
runtime=$work/runtime
mkdir -p "$runtime"
for p in "${runtime_pkgs[@]}"; do dpkg-deb -x "$(deb_of "$p")" "$runtime"; done
rm -rf "${runtime:?}/usr/share" "${runtime:?}/usr/lib/x86_64-linux-gnu/gconv"
mkdir -p "$work/out/buildkit" "$work/out/busybox"
for img in "${bk_images[@]}"; do
  r=$work/rootfs/buildkit-$img
  make_skeleton "$r"
  install_busybox "$r" "$(deb_of busybox-static:amd64)" "" # a native shell: nothing emulated but buildkitd
  copy_into "$runtime" "$r"
  install -m 0755 "$bins/$img/buildkitd" "$r/usr/bin/buildkitd"
  # buildx runs `buildctl dial-stdio` and `buildctl debug workers` through docker exec: a native
  # buildctl avoids Go-under-qemu start-up hangs on that path.
  install -m 0755 "$bins/amd64/buildctl" "$r/usr/bin/buildctl"
  mkdir -p "$r/var/lib/buildkit" "$r/etc/buildkit"
  chroot "$r" /bin/sh -c 'runc --version && buildctl --version && command -v buildkitd' >/dev/null ||
    die "buildkit-$img: runc/buildctl/sh do not run inside the root filesystem"
  case "$img" in
  amd64) check_binary "$r/usr/bin/buildkitd" 62 "" ;;
  arm64) check_binary "$r/usr/bin/buildkitd" 183 qemu-aarch64-static ;;
  armv7) check_binary "$r/usr/bin/buildkitd" 40 qemu-arm-static ;;
  esac
  write_tar "$r" "$work/out/buildkit/$img.tar"
done

step "assembling the busybox root filesystems"
for img in "${bb_images[@]}"; do
  r=$work/rootfs/busybox-$img
  make_skeleton "$r"
  case "$img" in
  amd64) runner="" ;;
  arm64) runner=qemu-aarch64-static ;;
  armhf | armel) runner=qemu-arm-static ;;
  esac
  install_busybox "$r" "$(deb_of "busybox-static:$img")" "$runner"
  want=$(case "$img" in amd64) echo 62 ;; arm64) echo 183 ;; *) echo 40 ;; esac)
  [ "$(elf_machine "$r/usr/bin/busybox")" = "$want" ] || die "busybox-$img: wrong architecture"
  if [ -z "$runner" ]; then
    chroot "$r" /bin/sh -c 'ls / >/dev/null && uname -m >/dev/null' || die "busybox-$img: shell does not work"
  else
    [ "$($runner "$r/usr/bin/busybox" sh -c 'echo ok')" = ok ] || die "busybox-$img: shell does not work"
  fi
  write_tar "$r" "$work/out/busybox/$img.tar"
done

step "installing the tars into $cache"
info() { # DEB... -> "package version arch" lines
  local f
  # shellcheck disable=SC2016 # dpkg's own ${Field} syntax
  for f in "$@"; do dpkg-deb --show --showformat='${Package} ${Version} ${Architecture}\n' "$f"; done
}
{
  echo "BuildKit $bk_version built $(date -u +%Y-%m-%dT%H:%M:%SZ) by lab/buildkit/build.sh (key $key)"
  echo "source: docker.io $src_version (trixie), $(basename "$orig_buildkit")"
  echo "go: $go_version, CGO_ENABLED=0, tags: $bk_tags"
  echo "ldflags: $ldflags"
  echo "image contents: /usr/bin/buildkitd (image arch), /usr/bin/buildctl (x86_64), runc and busybox-static (x86_64):"
  info "$(deb_of runc:amd64)" "$(deb_of libc6:amd64)" "$(deb_of libseccomp2:amd64)" "$(deb_of libgcc-s1:amd64)" "$(deb_of busybox-static:amd64)" | sed 's/^/  /'
  echo "import: docker import --platform linux/{amd64,arm64,arm/v7} --change 'ENTRYPOINT [\"buildkitd\"]' --change 'VOLUME /var/lib/buildkit' TAR"
  echo "busybox root filesystems:"
  for img in "${bb_images[@]}"; do info "$(deb_of "busybox-static:$img")" | sed 's/^/  /'; done
  echo "platforms: amd64.tar linux/amd64, arm64.tar linux/arm64, armhf.tar linux/arm/v7, armel.tar linux/arm/v6"
  echo "sha256:"
  (cd "$work/out" && sha256sum buildkit/*.tar busybox/*.tar) | sed "s,  buildkit/,  buildkit-$bk_version/,; s/^/  /"
} >"$work/out/info"
# The output directories hold exactly the tars (BUILD-INFO and SHA256SUMS there came from an earlier version).
mkdir -p "$bk_out" "$bb_out"
rm -f "$bk_out/BUILD-INFO" "$bk_out/SHA256SUMS" "$bb_out/BUILD-INFO" "$bb_out/SHA256SUMS"
for f in "$work"/out/buildkit/*.tar; do mv -f "$f" "$bk_out/"; done
for f in "$work"/out/busybox/*.tar; do mv -f "$f" "$bb_out/"; done
mv -f "$work/out/info" "$infofile"
printf '%s\n' "$key" >"$stamp"

# Keep only the downloads this build used.
find "$downloads/src" "$downloads/debs" -type f | sort >"$work/have"
sort "$work/src.files" "$work/debs.files" | comm -23 "$work/have" - | xargs -r rm -f
cd "$cache"
rm -rf "$work"
step_done
current_step=finished
log "[$((SECONDS - started))s] done"
printf 'build.sh: done in %ss: %s tars in %s and %s\n' "$((SECONDS - started))" "$(outputs | wc -l)" "$bk_out" "$bb_out" >&3
