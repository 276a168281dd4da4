#!/bin/sh
# Removes a node's BuildKit container and, when named, its state volume (the build cache). POSIX sh.
# It fails when the engine does not answer or the container is still there: a stopped engine would start the
# container again (restart unless-stopped), so "removed" must mean removed. A missing container is fine.
#
# Usage: remove_node.sh CONTAINER VOLUME
#   VOLUME  the state volume to remove with it; empty keeps it
container=$1 volume=$2
out=$(docker version --format '{{.Server.Version}}' 2>&1) || {
  printf '%s\n' "$out" | grep . | tail -n 1 >&2
  exit 1
}
docker rm -f "$container" >/dev/null 2>&1
if [ -n "$volume" ]; then docker volume rm -f "$volume" >/dev/null 2>&1; fi
if docker container inspect "$container" >/dev/null 2>&1; then
  printf '%s\n' "$container is still there" >&2
  exit 1
fi
