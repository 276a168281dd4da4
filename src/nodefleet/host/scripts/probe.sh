#!/bin/sh
# nodefleet's one question to a host: its node's BuildKit container, the BuildKit image, and the host's facts, in
# one round trip. POSIX sh; runs under bash, dash and busybox sh. Prints `key=value` lines, one per fact.
#
# Usage: probe.sh CONTAINER KNOWN_INSTANCE KNOWN_BOOT IMAGE FACTS [CACHE]
#   CONTAINER       the node's BuildKit container (buildx_buildkit_<node>)
#   KNOWN_INSTANCE  "<container id> <started at>" whose BuildKit answers the caller already has: while the container
#                   is that instance it runs the same image, so BuildKit is not asked again (no `docker exec`, slow
#                   where BuildKit is emulated). Empty: ask.
#   KNOWN_BOOT      a boot id whose machine and userland width the caller already has: a CPU does not change without
#                   a reboot, so `uname` and `getconf` (two processes) are not run again. Empty: ask.
#   IMAGE           the BuildKit image to look for. Empty: do not look.
#   FACTS           full (machine, OS, engine), machine (machine and userland width only) or none.
#   CACHE           du: a running BuildKit's cache size and how much of it is reclaimable (`buildctl du`, a
#                   `docker exec`: asked by `status`, not on a build's path). Empty: do not ask.
#
# The disk (free and total) of Docker's data root, where the node's state volume is, is told whenever the data
# root is known: from the container's state volume, or (full facts) from `docker info`.
#
# Lines that carry outside text are printed with printf: dash's echo would read backslashes in them as escapes.
#
# Keys: state instance buildkit workers inspect_error cache_total cache_reclaimable cache_error | image | cpus |
#       boot_id machine userland_bits | os docker_cli server_version docker_root docker_error | disk_path
#       disk_free_kb disk_size_kb
set -f
container=$1 known_instance=$2 known_boot=$3 image=$4 facts=$5 cache=${6:-}
nl='
'

# The node. BuildKit is asked through buildctl in the running daemon: `buildkitd --version` would start a second
# daemon binary (over a second where it is emulated); BuildKit before v0.11 has no `buildctl debug info`.
format='{{.State.Status}} {{.Id}} {{.State.StartedAt}} {{.Config.Image}} {{range .Mounts}}{{if eq .Destination "/var/lib/buildkit"}}{{.Source}}{{end}}{{end}}'
container_image='' root='' store=''
if out=$(docker inspect --type container -f "$format" "$container" 2>&1); then
  # shellcheck disable=SC2086  # split into the fields of the format (globbing is off)
  set -- $out
  state=$1 instance="$2 $3" container_image=$4
  # The state volume's folder (what follows the first four fields, spaces and all) is
  # <engine data root>/volumes/<volume>/_data.
  if [ $# -gt 4 ]; then store=${out#* * * * }; root=${store%/volumes/*/_data}; fi
else
  instance=
  case "$out" in
    *"o such object"* | *"o such container"*) state=missing ;;
    *)
      state=unknown
      error=$(printf '%s\n' "$out" | grep . | tail -n 1)
      printf '%s\n' "inspect_error=${error:-docker inspect failed without a word}"
      ;;
  esac
fi
printf '%s\n' "state=$state"
printf '%s\n' "instance=$instance"
if [ "$state" = running ] && [ "$instance" != "$known_instance" ]; then
  info=$(docker exec "$container" buildctl debug info 2>/dev/null) ||
    info=$(docker exec "$container" buildkitd --version 2>/dev/null)
  printf '%s\n' "buildkit=${info%%"$nl"*}"
  printf '%s\n' "workers=$(docker exec "$container" buildctl debug workers --format '{{json .}}' 2>/dev/null)"
fi
# The cache's size: the summary lines `buildctl du` ends with ("Reclaimable: 1.2GB", "Total: 3.4GB").
if [ "$state" = running ] && [ "$cache" = du ]; then
  if du=$(docker exec "$container" buildctl du 2>&1); then
    printf '%s\n' "$du" | while read -r key value rest; do
      case $key in
        Reclaimable:) printf '%s\n' "cache_reclaimable=$value" ;;
        Total:) printf '%s\n' "cache_total=$value" ;;
      esac
    done
  else
    printf '%s\n' "cache_error=$(printf '%s\n' "$du" | grep . | tail -n 1)"
  fi
fi

# The image. A running container made from it answers without a process: the engine keeps a running
# container's image.
if [ -n "$image" ]; then
  if [ "$state" = running ] && [ "$container_image" = "$image" ]; then
    echo image=present
  elif docker image inspect "$image" >/dev/null 2>&1; then
    echo image=present
  else
    echo image=absent
  fi
fi

# The host's CPUs (its share of a bake's jobs), counted by the shell itself (no process).
cpus=0
while read -r line; do
  case $line in processor*) cpus=$((cpus + 1)) ;; esac
done 2>/dev/null </proc/cpuinfo
printf '%s\n' "cpus=$cpus"

# The host. The boot id is read by the shell itself (no process).
disk() {
  path=$1
  # shellcheck disable=SC2046  # split df's last line into its fields (globbing is off)
  set -- $(df -Pk "$path" 2>/dev/null)
  printf '%s\n' "disk_path=$path" "disk_size_kb=${9:-}" "disk_free_kb=${11:-}"
}
# The disk BuildKit writes to: Docker's data root, which holds the node's state volume (the data root itself is
# looked at: the folders below it are root's alone).
[ -n "$root" ] && disk "$root"

[ "$facts" = none ] && exit 0
boot=
read -r boot 2>/dev/null </proc/sys/kernel/random/boot_id
printf '%s\n' "boot_id=$boot"
if [ -z "$boot" ] || [ "$boot" != "$known_boot" ]; then
  printf '%s\n' "machine=$(uname -m 2>/dev/null)"
  bits=$(getconf LONG_BIT 2>/dev/null)
  if [ -z "$bits" ]; then
    case "$(od -An -tx1 -j4 -N1 /bin/sh 2>/dev/null | tr -d ' ')" in 01) bits=32 ;; 02) bits=64 ;; esac
  fi
  printf '%s\n' "userland_bits=$bits"
fi
[ "$facts" = machine ] && exit 0
if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091  # the host's own file
  . /etc/os-release
  printf '%s\n' "os=${PRETTY_NAME:-$ID}"
else
  printf '%s\n' "os=$(uname -s)"
fi
if command -v docker >/dev/null 2>&1; then
  printf '%s\n' "docker_cli=yes"
  # `docker version` answers for the engine; `docker info` costs several times more (it starts every CLI plugin
  # and has the engine run its runtimes), so it is asked for the data root only when no state volume told it.
  # An engine that does not answer leaves the version empty, and its error on stderr.
  out=$(docker version --format 'server_version={{.Server.Version}}' 2>&1)
  version=
  case "$out" in *server_version=*) version=${out#*server_version=}; version=${version%%"$nl"*} ;; esac
  if [ -n "$version" ]; then
    printf '%s\n' "server_version=$version"
    [ -n "$root" ] || root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null)
    printf '%s\n' "docker_root=$root"
  else
    printf '%s\n' "docker_error=$(printf '%s\n' "$out" | grep -v -e '^server_version=' | grep . | tail -n 1)"
  fi
else
  printf '%s\n' "docker_cli=no"
fi
# No state volume told the data root before: the disk of the one `docker info` named.
if [ -z "$store" ]; then
  [ -d "$root" ] || root=/
  disk "$root"
fi
