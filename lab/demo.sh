#!/usr/bin/env bash
# The main job end to end on the local lab: start the lab, `nodefleet up`, a native multi-arch
# `nodefleet build` pushed to the lab registry, each platform's image run, `nodefleet status`, then `nodefleet down`,
# so the builder does not stay in your buildx store (`docker buildx ls` would spend seconds on its dead nodes once
# the lab is down). Run as root on Debian 12 after ./lab/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
lab_dir=${NODEFLEET_LAB_DIR:-/var/lib/nodefleet-lab}
nodefleet=(.venv/bin/python -m nodefleet)
inventory="$lab_dir/inventory.toml"
image=10.231.0.1:5443/demo/hello:latest

echo "== starting the lab (3 hosts: amd64, arm64, arm/v7)"
python3 lab/labctl.py up
# From `nodefleet up` on, a failing demo removes the builder too.
builder_made=0
on_exit() {
  local rc=$?
  if [ "$rc" != 0 ] && [ "$builder_made" = 1 ]; then
    echo "== the demo failed (exit $rc): nodefleet down" >&2
    "${nodefleet[@]}" down -i "$inventory" || true
  fi
}
trap on_exit EXIT
echo "== nodefleet up"
builder_made=1
"${nodefleet[@]}" up -i "$inventory"
echo "== nodefleet build"
"${nodefleet[@]}" build -i "$inventory" --platform linux/amd64,linux/arm64,linux/arm/v7 -t "$image" --push lab/demo
echo "== each platform's image, run"
amd64_socket=$(python3 -c "import json,sys; print([h for h in json.load(open(sys.argv[1]))['hosts'] if h['name']=='amd64-1'][0]['docker_host'])" "$lab_dir/lab.json")
for platform in linux/amd64 linux/arm64 linux/arm/v7; do
  DOCKER_HOST="unix://${amd64_socket#unix://}" docker run --rm --quiet --pull always --platform "$platform" "$image"
done
echo "== nodefleet status"
"${nodefleet[@]}" status -i "$inventory"
echo "== nodefleet down (the builder leaves your buildx store; the lab stays up)"
"${nodefleet[@]}" down -i "$inventory"
builder_made=0
echo "== done; stop the lab with: python3 lab/labctl.py down"
