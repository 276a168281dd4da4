#!/usr/bin/env bash
# Proves the BuildKit root filesystems from build.sh work as images, offline: imports each into a
# private, throwaway dockerd (own data root and socket, no bridge, no iptables), runs it the way
# buildx's docker-container driver does (privileged, buildkitd as entrypoint), checks the worker's
# native platform, and builds a Dockerfile with a RUN step on top of the busybox rootfs of that
# architecture. Also imports each busybox tar with its platform and runs `uname -m` in it.
# Needs root, docker.io (dockerd + CLI), qemu-user-static (qemu-user-binfmt) or binfmt-support.
# binfmt entries it has to register or enable are put back as they were at the end.
# Usage: smoke.sh [IMAGE...]   IMAGE is amd64, arm64, armv7 or busybox (default: all four).
set -Eeuo pipefail

cache=${NODEFLEET_LAB_CACHE:-/var/cache/nodefleet-lab}
bk_version=v0.13.2
images=("$@")
[ "${#images[@]}" -gt 0 ] || images=(busybox amd64 arm64 armv7)

log() { printf 'smoke.sh: %s\n' "$*" >&2; }
die() {
  log "FAIL: $*"
  exit 1
}

[ "$(id -u)" = 0 ] || die "run as root"
for tool in dockerd docker; do command -v "$tool" >/dev/null || die "missing $tool"; done
for img in "${images[@]}"; do
  case "$img" in
  busybox) tars=("$cache"/busybox/{amd64,arm64,armhf,armel}.tar) ;;
  amd64 | arm64 | armv7) tars=("$cache/buildkit-$bk_version/$img.tar") ;;
  *) die "unknown image $img (amd64, arm64, armv7 or busybox)" ;;
  esac
  for t in "${tars[@]}"; do [ -s "$t" ] || die "missing $t (run lab/buildkit/build.sh)"; done
done

binfmt=/proc/sys/fs/binfmt_misc
binfmt_undo=() # "mount", "remove NAME" or "disable NAME", undone at exit
work=$(mktemp -d /tmp/nflab-smoke.XXXXXX)
sock=$work/docker.sock
dockerd_pid=
undo_binfmt() {
  local i
  for ((i = ${#binfmt_undo[@]} - 1; i >= 0; i--)); do
    case "${binfmt_undo[i]}" in
    mount) umount "$binfmt" ;;
    "remove "*) echo -1 >"$binfmt/${binfmt_undo[i]#remove }" ;;
    "disable "*) echo 0 >"$binfmt/${binfmt_undo[i]#disable }" ;;
    esac || log "could not undo binfmt change: ${binfmt_undo[i]}"
  done
}
cleanup() {
  local rc=$?
  if [ -n "$dockerd_pid" ]; then
    DOCKER_HOST=unix://$sock docker ps -aq 2>/dev/null | xargs -r env DOCKER_HOST="unix://$sock" docker rm -f >/dev/null 2>&1 || true
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  fi
  umount -R "$work/data" 2>/dev/null || true
  rm -rf "$work"
  undo_binfmt
  [ "$rc" = 0 ] || log "failed (exit $rc)"
}
trap cleanup EXIT

# Foreign binaries (buildkitd, and the RUN steps of arm builds) run through binfmt_misc + qemu. Debian's
# qemu-user-binfmt (trixie) ships systemd-binfmt rules, not binfmt-support entries: register from those.
if [ ! -e "$binfmt/register" ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt"
  binfmt_undo+=(mount)
fi
for q in qemu-aarch64 qemu-arm; do
  if [ ! -e "$binfmt/$q" ]; then
    if [ -f "/usr/lib/binfmt.d/$q.conf" ]; then
      grep -v '^#' "/usr/lib/binfmt.d/$q.conf" >"$binfmt/register" || die "cannot register binfmt $q"
    else
      update-binfmts --enable "$q" || die "cannot enable binfmt $q"
    fi
    binfmt_undo+=("remove $q")
  elif [ "$(head -n 1 "$binfmt/$q")" = disabled ]; then
    echo 1 >"$binfmt/$q"
    binfmt_undo+=("disable $q")
  fi
  grep -q '^flags:.*F' "$binfmt/$q" || die "binfmt $q lacks the F flag (needed inside containers)"
done

log "starting a private dockerd ($sock)"
dockerd --data-root "$work/data" --exec-root "$work/exec" --pidfile "$work/dockerd.pid" -H "unix://$sock" \
  --bridge none --iptables=false --ip6tables=false --cgroup-parent nflab-smoke >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
export DOCKER_HOST=unix://$sock
for _ in $(seq 100); do
  docker version >/dev/null 2>&1 && break
  kill -0 "$dockerd_pid" 2>/dev/null || die "dockerd exited: $(tail -5 "$work/dockerd.log")"
  sleep 0.3
done
docker version >/dev/null || die "dockerd did not answer: $(tail -5 "$work/dockerd.log")"

results=()
for img in "${images[@]}"; do
  [ "$img" = busybox ] || continue
  # Each busybox tar as an image of its platform: the applets run (emulated on arm) and say their machine.
  for bb in amd64:linux/amd64:x86_64 arm64:linux/arm64:aarch64 armhf:linux/arm/v7:armv7l 'armel:linux/arm/v6:armv[5-8]t?e?j?l'; do
    IFS=: read -r deb platform arch_re <<<"$bb"
    tag=nflab-smoke/busybox:$deb
    docker import --platform "$platform" --change 'CMD ["sh"]' "$cache/busybox/$deb.tar" "$tag" >/dev/null
    got=$(docker image inspect -f '{{.Os}}/{{.Architecture}}{{with .Variant}}/{{.}}{{end}}' "$tag")
    [ "$got" = "$platform" ] || die "busybox $deb: image platform $got, expected $platform"
    arch=$(timeout 60 docker run --rm --network none --platform "$platform" "$tag" uname -m) ||
      die "busybox $deb: docker run --platform $platform uname -m failed"
    [[ $arch =~ ^$arch_re$ ]] || die "busybox $deb: uname -m says '$arch'"
    out=$(timeout 60 docker run --rm --network none --platform "$platform" "$tag" sh -c 'ls /bin/sh >/dev/null && echo ok')
    [ "$out" = ok ] || die "busybox $deb: sh -c failed"
    results+=("busybox/$deb.tar: image $platform, uname -m $arch")
  done
done
for img in "${images[@]}"; do
  case "$img" in
  busybox) continue ;;
  amd64) platform=linux/amd64 deb=amd64 arch_re='^x86_64$' native_re='^linux/amd64$' env=() ;;
  arm64) platform=linux/arm64 deb=arm64 arch_re='^aarch64$' native_re='^linux/arm64$' env=(-e GODEBUG=asyncpreemptoff=1 -e GOMAXPROCS=1) ;;
  armv7) platform=linux/arm/v7 deb=armhf arch_re='^armv[78]l$' native_re='^linux/arm/v[78]$' env=(-e GODEBUG=asyncpreemptoff=1 -e GOMAXPROCS=1) ;;
  *) die "unknown image $img" ;;
  esac
  t0=$SECONDS
  tag=nflab-smoke/buildkit:$img
  docker import --platform "$platform" --change 'ENTRYPOINT ["buildkitd"]' --change 'VOLUME /var/lib/buildkit' \
    "$cache/buildkit-$bk_version/$img.tar" "$tag" >/dev/null
  got=$(docker image inspect -f '{{.Os}}/{{.Architecture}}{{with .Variant}}/{{.}}{{end}}' "$tag")
  [ "$got" = "$platform" ] || die "$img: image platform $got, expected $platform"

  # Build context: the busybox rootfs of the same architecture and a Dockerfile with RUN steps.
  ctx=$work/ctx-$img
  mkdir -p "$ctx/rootfs"
  tar -C "$ctx/rootfs" -xf "$cache/busybox/$deb.tar"
  printf '%s\n' 'FROM scratch' 'COPY rootfs/ /' 'RUN uname -m >/arch && echo hello >/hello' >"$ctx/Dockerfile"

  # A Go program under qemu can hang at start (lab-facts): bounded waits, one retry on a new container.
  ready=
  for attempt in 1 2; do
    name=nflab-smoke-$img-$attempt
    docker run -d --name "$name" --platform "$platform" --privileged "${env[@]}" -v "$ctx:/ctx:ro" "$tag" >/dev/null
    for _ in $(seq 60); do
      if timeout 10 docker exec "$name" buildctl debug workers >/dev/null 2>&1; then
        ready=$name
        break
      fi
      sleep 1
    done
    [ -n "$ready" ] && break
    log "$img: buildkitd not ready after ~60 s (attempt $attempt): $(docker logs "$name" 2>&1 | tail -3)"
    docker rm -f "$name" >/dev/null
  done
  [ -n "$ready" ] || die "$img: buildkitd never answered"
  native=$(docker exec "$ready" buildctl debug workers --format '{{range .}}{{index .Platforms 0 | printf "%s/%s"}}{{end}}' 2>/dev/null || true)
  # --format templates differ between versions: fall back to the verbose listing.
  if [ -z "$native" ] || [[ $native == *"%"* ]]; then
    native=$(docker exec "$ready" buildctl debug workers -v | awk '/^Platforms:/ {print $2; exit}' | cut -d, -f1)
  fi
  [[ $native =~ $native_re ]] || die "$img: BuildKit's native platform is '$native'"
  timeout 300 docker exec "$ready" buildctl build --frontend dockerfile.v0 --local context=/ctx --local dockerfile=/ctx \
    --output type=local,dest=/tmp/out >"$work/build-$img.log" 2>&1 || die "$img: build failed: $(tail -15 "$work/build-$img.log")"
  arch=$(docker exec "$ready" cat /tmp/out/arch)
  [[ $arch =~ $arch_re ]] || die "$img: RUN saw uname -m '$arch'"
  [ "$(docker exec "$ready" cat /tmp/out/hello)" = hello ] || die "$img: RUN output missing"
  version=$(docker exec "$ready" buildkitd --version | awk '{print $3}')
  [ "$version" = "$bk_version" ] || die "$img: buildkitd --version says $version"
  docker rm -f "$ready" >/dev/null
  result="$img: image $platform, buildkitd $version, native worker platform $native, RUN uname -m $arch"

  # The way nodefleet uses it: a buildx docker-container node on that image (buildx talks to it
  # through `docker exec buildctl dial-stdio`; the pull of the image fails offline and buildx falls
  # back to the local image).
  if docker buildx version >/dev/null 2>&1; then
    export BUILDX_CONFIG=$work/buildx
    opts=(--driver-opt "image=$tag")
    [ "$img" = amd64 ] || opts+=(--driver-opt env.GODEBUG=asyncpreemptoff=1 --driver-opt env.GOMAXPROCS=1)
    docker buildx create --name "smoke-$img" --node "smoke-$img" --driver docker-container "${opts[@]}" >/dev/null
    timeout 180 docker buildx inspect --bootstrap "smoke-$img" >"$work/inspect-$img.log" 2>&1 ||
      die "$img: buildx bootstrap failed: $(tail -5 "$work/inspect-$img.log")"
    bx_platforms=$(awk -F': *' '/^Platforms:/ {print $2; exit}' "$work/inspect-$img.log")
    [[ ${bx_platforms%%,*} =~ $native_re ]] || die "$img: buildx lists platforms '$bx_platforms'"
    timeout 300 docker buildx build --builder "smoke-$img" --platform "$platform" --output "type=local,dest=$work/bx-$img" "$ctx" \
      >"$work/bx-build-$img.log" 2>&1 || die "$img: buildx build failed: $(tail -15 "$work/bx-build-$img.log")"
    bx_arch=$(cat "$work/bx-$img/arch")
    [[ $bx_arch =~ $arch_re ]] || die "$img: buildx RUN saw uname -m '$bx_arch'"
    docker buildx rm "smoke-$img" >/dev/null 2>&1
    result+=", buildx $(docker buildx version | awk '{print $2}') node ok (platforms ${bx_platforms%%,*},...)"
  fi
  results+=("$result, $((SECONDS - t0)) s")
done
printf 'ok %s\n' "${results[@]}"
