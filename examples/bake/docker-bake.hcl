# An example for `nodefleet bake` (see the README): three images for three platforms, one built on another.
#
#   REGISTRY=registry.example.com nodefleet bake --push
#
# nodefleet reads this file through `docker buildx bake --print`, so variables, `inherits`, groups and `--set`
# mean what they mean to buildx. `app` uses `base` as a context: for each platform they are built together, on one
# native node; `worker` and `cli` are jobs of their own, shared with `app` among the nodes of each platform.

variable "REGISTRY" { default = "registry.example.com" }
variable "TAG" { default = "latest" }

target "_common" {
  platforms = ["linux/amd64", "linux/arm64", "linux/arm/v7"]
  args = { ALPINE = "alpine:3.20" }
}

target "base" {
  inherits = ["_common"]
  dockerfile = "base.Dockerfile"
}

target "app" {
  inherits = ["_common"]
  dockerfile = "app.Dockerfile"
  contexts = { base = "target:base" }
  tags = ["${REGISTRY}/example/app:${TAG}"]
}

target "worker" {
  inherits = ["_common"]
  dockerfile = "worker.Dockerfile"
  tags = ["${REGISTRY}/example/worker:${TAG}"]
}

target "cli" {
  inherits = ["_common"]
  dockerfile = "worker.Dockerfile"
  args = { ROLE = "cli" }
  tags = ["${REGISTRY}/example/cli:${TAG}"]
  platforms = ["linux/amd64", "linux/arm64"]
}

group "default" { targets = ["app", "worker", "cli"] }
