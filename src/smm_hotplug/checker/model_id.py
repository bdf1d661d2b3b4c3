"""Which model a result was made with: the tool's version and a digest of the model itself.

The digest is computed from the model's own definitions — the source of every module that
defines hardware, firmware and guest programs, designs, adversaries, invariants and hard cases —
so any change to what a schedule does changes it, and nobody has to remember to bump it.  The
drivers (command line, QEMU endpoint, reports, the checker's search and the simulator) are left
out: they do not change what a schedule means.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata, resources
from importlib.abc import Traversable

PACKAGE = "smm_hotplug"
# Parts of the package that drive the model rather than define it.
DRIVERS = frozenset({"interfaces", "report", "checker", "simulator.py", "errors.py", "__init__.py"})
# ... except the hard cases, which are part of what a witness trace claims.
MODEL_IN_DRIVERS = frozenset({"checker/cases.py"})


def tool_version() -> str:
    try:
        return metadata.version("smm-hotplug")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        from smm_hotplug import __version__

        return __version__


def _sources(node: Traversable, prefix: str) -> list[tuple[str, Traversable]]:
    out = []
    for child in node.iterdir():
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            if child.name != "__pycache__":
                out += _sources(child, rel + "/")
        elif child.name.endswith(".py"):
            out.append((rel, child))
    return out


def model_files() -> list[str]:
    """The package-relative paths of the source files the digest covers, sorted."""
    return [rel for rel, _ in _model_sources()]


def _model_sources() -> list[tuple[str, Traversable]]:
    files = _sources(resources.files(PACKAGE), "")
    keep = [(rel, f) for rel, f in files if rel.split("/")[0] not in DRIVERS or rel in MODEL_IN_DRIVERS]
    return sorted(keep, key=lambda item: item[0])


@functools.cache
def model_digest() -> str:
    """sha256 over the path and bytes of every model source file (first 16 hex digits)."""
    h = hashlib.sha256()
    for rel, f in _model_sources():
        data = f.read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:16]
