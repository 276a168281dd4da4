"""The lab registry (Debian's docker-registry over TLS) and pushing images into it straight from rootfs tars.

Images are pushed with the registry HTTP API instead of `docker import` + `docker push`: no engine is needed, the
layers are deterministic (so a second `up` finds everything already there), and the storage lives in the cache dir.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import ssl
import zlib
from collections.abc import Mapping
from pathlib import Path

from .core import LabError, LabPaths, Log, daemon_alive, load_daemon, start_daemon, stop_daemon, wait_for
from .pki import ca_cert, registry_cert
from .spec import BUILDKIT_VERSION, REGISTRY

DAEMON_KEY = "registry"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CHUNK = 1 << 20


def start(paths: LabPaths, log: Log) -> None:
    config = paths.state / "registry.yml"
    crt, key = registry_cert(paths)
    storage = paths.cache / "registry"
    storage.mkdir(parents=True, exist_ok=True)
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {REGISTRY}\n  tls:\n    certificate: {crt}\n    key: {key}\n"
    )
    log.write(f"registry storage {storage}")
    record = start_daemon(paths, DAEMON_KEY, ["docker-registry", "serve", str(config)], paths.logs / "registry.log")
    client = RegistryClient(REGISTRY, ca_cert(paths))
    wait_for("registry", client.ping, 20, alive=lambda: daemon_alive(record))


def stop(paths: LabPaths) -> None:
    """Stop the registry (a fault for the tests); `start` brings it back on the same storage."""
    stop_daemon(paths, DAEMON_KEY, timeout=10)


def running(paths: LabPaths) -> bool:
    return daemon_alive(load_daemon(paths, DAEMON_KEY))


class RegistryClient:
    """The few registry API v2 calls the lab needs, over HTTPS trusting only the lab CA."""

    def __init__(self, address: str, cafile: Path) -> None:
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.context = ssl.create_default_context(cafile=str(cafile))

    def request(
        self, method: str, target: str, body: bytes | Path | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=60)
        try:
            headers = dict(headers or {})
            if isinstance(body, Path):
                headers["Content-Length"] = str(body.stat().st_size)
                with body.open("rb") as stream:
                    conn.request(method, target, body=stream, headers=headers)
                    response = conn.getresponse()
            else:
                conn.request(method, target, body=body, headers=headers)
                response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def ping(self) -> bool:
        try:
            status, _, _ = self.request("GET", "/v2/")
        except OSError:
            return False
        return status == 200

    def has_blob(self, repo: str, digest: str) -> bool:
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        return status == 200

    def upload_blob(self, repo: str, digest: str, body: bytes | Path) -> None:
        if self.has_blob(repo, digest):
            return
        status, headers, text = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        if status != 202:
            raise LabError(f"registry refused an upload to {repo}: HTTP {status} {text[:200]!r}")
        location = headers["Location"]
        if location.startswith("https://"):
            location = "/" + location.split("/", 3)[3]
        separator = "&" if "?" in location else "?"
        status, _, text = self.request(
            "PUT", f"{location}{separator}digest={digest}", body, {"Content-Type": "application/octet-stream"}
        )
        if status != 201:
            raise LabError(f"registry refused blob {digest} for {repo}: HTTP {status} {text[:200]!r}")

    def manifest_digest(self, repo: str, ref: str) -> str | None:
        accept = ", ".join([MANIFEST, MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX])
        status, headers, _ = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": accept})
        return headers.get("Docker-Content-Digest") if status == 200 else None

    def put_manifest(self, repo: str, ref: str, media_type: str, body: bytes) -> str:
        status, _, text = self.request("PUT", f"/v2/{repo}/manifests/{ref}", body, {"Content-Type": media_type})
        if status != 201:
            raise LabError(f"registry refused manifest {repo}:{ref}: HTTP {status} {text[:300]!r}")
        return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclasses.dataclass(frozen=True)
class RootfsImage:
    """A single-platform image made of one rootfs tar, like `docker import --platform P --change ...` makes."""

    repo: str
    tag: str
    tar: Path
    platform: str  # linux/arm/v7
    config: Mapping[str, object]  # the image config's "config" (Cmd, Entrypoint, Volumes, ...)


@dataclasses.dataclass(frozen=True)
class Pushed:
    digest: str
    size: int
    platform: str


def platform_fields(platform: str) -> dict[str, str]:
    os_name, arch, *variant = platform.split("/")
    fields = {"architecture": arch, "os": os_name}
    if variant:
        fields["variant"] = variant[0]
    elif arch == "arm64":
        fields["variant"] = "v8"
    return fields


def gzip_layer(tar: Path, out: Path) -> tuple[str, str, int]:
    """Compress a tar deterministically; return (diff_id, digest, compressed size)."""
    diff = hashlib.sha256()
    digest = hashlib.sha256()
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip wrapper, mtime 0: same bytes every time
    size = 0
    with tar.open("rb") as source, out.open("wb") as sink:
        while chunk := source.read(CHUNK):
            diff.update(chunk)
            data = compressor.compress(chunk)
            digest.update(data)
            sink.write(data)
            size += len(data)
        data = compressor.flush()
        digest.update(data)
        sink.write(data)
        size += len(data)
    return "sha256:" + diff.hexdigest(), "sha256:" + digest.hexdigest(), size


def push_rootfs_image(client: RegistryClient, image: RootfsImage, workdir: Path, log: Log) -> Pushed:
    workdir.mkdir(parents=True, exist_ok=True)
    layer = workdir / f"{image.tar.stem}.layer.tar.gz"
    diff_id, layer_digest, layer_size = gzip_layer(image.tar, layer)
    client.upload_blob(image.repo, layer_digest, layer)
    layer.unlink()
    config = {
        **platform_fields(image.platform),
        "created": "1970-01-01T00:00:00Z",
        "config": image.config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"nodefleet lab: {image.tar.name}"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    client.upload_blob(image.repo, config_digest, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": layer_size}],
    }
    body = json.dumps(manifest, sort_keys=True).encode()
    digest = client.put_manifest(image.repo, image.tag, MANIFEST, body)
    log.write(f"pushed {image.repo}:{image.tag} {digest} ({image.platform}, layer {layer_size} bytes)")
    return Pushed(digest, len(body), image.platform)


def push_index(client: RegistryClient, repo: str, tag: str, parts: list[Pushed], log: Log) -> str:
    index = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_LIST,
        "manifests": [
            {"mediaType": MANIFEST, "digest": p.digest, "size": p.size, "platform": platform_fields(p.platform)}
            for p in parts
        ],
    }
    digest = client.put_manifest(repo, tag, MANIFEST_LIST, json.dumps(index, sort_keys=True).encode())
    log.write(f"pushed {repo}:{tag} {digest} (index of {', '.join(p.platform for p in parts)})")
    return digest


class PushCache:
    """Remembers which tar each tag was pushed from, so an unchanged artifact is not compressed and pushed again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.entries: dict[str, dict[str, object]] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def source_key(tar: Path) -> str:
        st = tar.stat()
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"

    def lookup(self, client: RegistryClient, image: RootfsImage) -> Pushed | None:
        entry = self.entries.get(f"{image.repo}:{image.tag}")
        if not entry or entry.get("source") != self.source_key(image.tar):
            return None
        if client.manifest_digest(image.repo, image.tag) != entry["digest"]:
            return None
        return Pushed(str(entry["digest"]), int(str(entry["size"])), image.platform)

    def remember(self, image: RootfsImage, pushed: Pushed) -> None:
        self.entries[f"{image.repo}:{image.tag}"] = {
            "source": self.source_key(image.tar),
            "digest": pushed.digest,
            "size": pushed.size,
        }
        self.path.write_text(json.dumps(self.entries, indent=1, sort_keys=True))


BUSYBOX_PLATFORMS = [("amd64", "amd64", "linux/amd64"), ("arm64", "arm64", "linux/arm64"),
                     ("armhf", "armv7", "linux/arm/v7"), ("armel", "armv6", "linux/arm/v6")]  # fmt: skip
BUILDKIT_PLATFORMS = [("amd64", "linux/amd64"), ("arm64", "linux/arm64"), ("armv7", "linux/arm/v7")]


def lab_images(paths: LabPaths) -> tuple[list[RootfsImage], list[RootfsImage]]:
    """(busybox per platform, BuildKit per platform), from the artifact tars in the cache dir."""
    busybox = [
        RootfsImage(
            "lab/busybox", tag, paths.cache / "busybox" / f"{deb}.tar", platform, {"Env": [DEFAULT_PATH], "Cmd": ["sh"]}
        )
        for deb, tag, platform in BUSYBOX_PLATFORMS
    ]
    buildkit_config = {"Env": [DEFAULT_PATH], "Entrypoint": ["buildkitd"], "Volumes": {"/var/lib/buildkit": {}}}
    buildkit = [
        RootfsImage("lab/buildkit", f"{BUILDKIT_VERSION}-{slug}",
                    paths.cache / f"buildkit-{BUILDKIT_VERSION}" / f"{slug}.tar", platform, buildkit_config)
        for slug, platform in BUILDKIT_PLATFORMS
    ]  # fmt: skip
    return busybox, buildkit


def push_lab_images(paths: LabPaths, log: Log) -> str:
    """Push busybox (per-arch tags + the `stable` index) and the per-arch BuildKit images; skip what is there."""
    client = RegistryClient(REGISTRY, ca_cert(paths))
    cache = PushCache(paths.cache / "registry-pushed.json")
    busybox, buildkit = lab_images(paths)
    missing = [str(image.tar) for image in busybox + buildkit if not image.tar.is_file()]
    if missing:
        raise LabError(f"artifact missing after lab/buildkit/build.sh: {', '.join(missing)}")
    pushed_now = 0
    busybox_parts = []
    for image in busybox + buildkit:
        pushed = cache.lookup(client, image)
        if pushed is None:
            pushed = push_rootfs_image(client, image, paths.state / "tmp", log)
            cache.remember(image, pushed)
            pushed_now += 1
        if image in busybox:
            busybox_parts.append(pushed)
    push_index(client, "lab/busybox", "stable", busybox_parts, log)
    return f"{pushed_now} pushed, {len(busybox) + len(buildkit) - pushed_now} cached" if pushed_now else "cached"


def busybox_image() -> str:
    return f"{REGISTRY}/lab/busybox:stable"
