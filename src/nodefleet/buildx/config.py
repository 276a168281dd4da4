"""The buildkitd.toml every node gets (the inventory's own, or one rendered from [registries]) and its digest,
which tells `up` when a node's config changed."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nodefleet.errors import UsageError
from nodefleet.inventory import Inventory, Registry
from nodefleet.state import BuilderState, private_dir, write_private


def resolve_buildkitd_config(inventory: Inventory, state: BuilderState) -> Path | None:
    """The buildkitd.toml every node gets: the inventory's own, or one written from [registries]."""
    if inventory.defaults.buildkitd_config is not None:
        return inventory.defaults.buildkitd_config
    if not inventory.registries:
        return None
    private_dir(state.dir)
    path = state.buildkitd_config
    text = render_buildkitd_config(inventory.registries)
    if not path.exists() or path.read_text() != text:
        write_private(path, text.encode())
    return path


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
