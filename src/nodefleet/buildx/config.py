"""The buildkitd.toml each node gets (the inventory's own, or one rendered from [registries] and the host's cache
budget) and its digest, which tells `up` when a node's config changed.

A cache budget becomes the node's garbage-collection policy in the form its BuildKit reads: before v0.17, rules
with `keepBytes` (the cache's size after a collection) and `keepDuration`; from v0.17, `maxUsedSpace` and
`minFreeSpace`. BuildKit from v0.17 still reads the older form (`keepBytes` as `reservedSpace`, the same behaviour),
so a node whose BuildKit version is not known yet gets the older form, and the newer one once its version is seen."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nodefleet.errors import UsageError
from nodefleet.inventory import CacheBudget, Host, Inventory, Registry
from nodefleet.state import BuilderState, private_dir, write_private
from nodefleet.units import human_duration, human_size

CURRENT_GC_FROM = (0, 17)  # the first BuildKit with reservedSpace / maxUsedSpace / minFreeSpace
DEFAULT_CAP = "10%"  # BuildKit's own cap on its cache, as a share of the disk, when a budget names no size


def resolve_buildkitd_config(inventory: Inventory, state: BuilderState) -> Path | None:
    """The buildkitd.toml every node gets: the inventory's own, or one written from [registries]."""
    if inventory.defaults.buildkitd_config is not None:
        return inventory.defaults.buildkitd_config
    if not inventory.registries:
        return None
    return _write_if_changed(state.buildkitd_config, render_buildkitd_config(inventory.registries))


def has_own_config(inventory: Inventory, host: Host) -> bool:
    """True when the host's node gets a buildkitd.toml of its own: it has a cache budget (which the inventory
    refuses beside defaults.buildkitd_config). Other nodes get the builder's."""
    return bool(host.cache) and inventory.defaults.buildkitd_config is None


def node_config(inventory: Inventory, state: BuilderState, host: Host, version: str | None) -> Path | None:
    """The buildkitd.toml `up` gives this host's node: the builder's own file, or, for a host with a cache budget,
    one of its own with the budget's policy in the form its BuildKit (`version`, None: not known) reads."""
    if not has_own_config(inventory, host):
        return resolve_buildkitd_config(inventory, state)
    text = render_buildkitd_config(inventory.registries) + render_gc_policy(host.cache, current_gc(version))
    return _write_if_changed(state.node_config(host.name), text)


def applied_node_config(state: BuilderState, host: Host) -> Path | None:
    """The buildkitd.toml of its own the last `up` gave a host's node (see has_own_config), for a build to make its
    helper nodes the same; None when `up` has written none yet."""
    path = state.node_config(host.name)
    return path if path.exists() else None


def _write_if_changed(path: Path, text: str) -> Path:
    """Write a private generated config, leaving it untouched when it already says `text`."""
    private_dir(path.parent)
    if not path.exists() or path.read_text() != text:
        write_private(path, text.encode())
    return path


def current_gc(version: str | None) -> bool:
    """True when this BuildKit version (`v0.17.3`, `v0.13.2+ds1`) reads the newer gc settings."""
    numbers = (version or "").lstrip("v").split("-")[0].split("+")[0].split(".")
    try:
        return (int(numbers[0]), int(numbers[1])) >= CURRENT_GC_FROM
    except (ValueError, IndexError):
        return False


def render_gc_policy(budget: CacheBudget, current: bool) -> str:
    """The [worker.oci] gc settings for a cache budget (the docker-container driver runs BuildKit's OCI worker).

    Two rules, in order: records unused for longer than keep_for go first; then the cache is brought under
    max_size (and, from v0.17, the disk to min_free), least recently used first. Sizes in bytes and durations in
    seconds: the plain integers every BuildKit version reads."""
    lines = ["[worker.oci]", "  gc = true"]
    comment = f"  # nodefleet cache budget: {_describe(budget)}"
    lines.insert(0, comment.strip())
    if budget.keep_for is not None:
        lines += ["", "  [[worker.oci.gcpolicy]]", f"    keepDuration = {budget.keep_for}"]
    lines += ["", "  [[worker.oci.gcpolicy]]", "    all = true"]
    if current:
        if budget.max_size is not None:
            lines.append(f"    maxUsedSpace = {budget.max_size}")
        if budget.min_free is not None:
            lines.append(f"    minFreeSpace = {budget.min_free}")
        if budget.max_size is None and budget.min_free is None:
            lines.append(f'    maxUsedSpace = "{DEFAULT_CAP}"')
    else:
        # Before v0.17 a rule can only cap the cache's size; min_free is kept by nodefleet's routing and prune.
        size = str(budget.max_size) if budget.max_size is not None else f'"{DEFAULT_CAP}"'
        lines.append(f"    keepBytes = {size}")
    return "\n".join(lines) + "\n"


def _describe(budget: CacheBudget) -> str:
    parts = []
    if budget.max_size is not None:
        parts.append(f"max_size {human_size(budget.max_size)}")
    if budget.min_free is not None:
        parts.append(f"min_free {human_size(budget.min_free)}")
    if budget.keep_for is not None:
        parts.append(f"keep_for {human_duration(budget.keep_for)}")
    return ", ".join(parts)


def render_buildkitd_config(registries: Iterable[Registry]) -> str:
    """A buildkitd.toml trusting each registry's CA, with its mirrors and plain-HTTP setting."""
    lines: list[str] = []
    for registry in registries:
        lines.append(f"[registry.{_toml_key(registry.host)}]")
        if registry.mirrors:
            lines.append("  mirrors = [" + ", ".join(_toml_string(m) for m in registry.mirrors) + "]")
        if registry.insecure:
            lines.append("  http = true")
            lines.append("  insecure = true")
        if registry.ca_file is not None:
            lines.append(f"  ca = [{_toml_string(str(registry.ca_file))}]")
        lines.append("")
    return "\n".join(lines)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_key(value: str) -> str:
    return _toml_string(value)


def config_digest(path: Path | None) -> str:
    """A digest of a buildkitd.toml and every file it names (CAs, key pairs), which buildx copies into nodes."""
    if path is None:
        return ""
    digest = hashlib.sha256()
    try:
        raw = path.read_bytes()
        digest.update(raw)
        document = tomllib.loads(raw.decode())
    except OSError as exc:
        raise UsageError(f"buildkitd_config {path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"buildkitd_config {path}: not valid TOML: {exc}") from None
    for name in sorted(_referenced_files(document)):
        file = Path(name) if Path(name).is_absolute() else path.parent / name
        try:
            digest.update(name.encode() + b"\0" + file.read_bytes())
        except OSError as exc:
            raise UsageError(f"buildkitd_config {path}: names {name}, which cannot be read: {exc.strerror}") from None
    return digest.hexdigest()[:16]


def _referenced_files(document: dict[str, Any]) -> set[str]:
    files: set[str] = set()
    for settings in (document.get("registry") or {}).values():
        if not isinstance(settings, dict):
            continue
        files.update(str(ca) for ca in settings.get("ca") or [])
        for pair in settings.get("keypair") or []:
            if isinstance(pair, dict):
                files.update(str(pair[key]) for key in ("key", "cert") if pair.get(key))
    return files
