"""Where a model named in the config lives: a Hub name, a local folder, or a folder shipped in a Python package.

Every loader takes what `model_location` returns, so a test's bundled weights load through the same code path
as a production checkpoint, and a missing folder is one sentence before any Ray worker starts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pipeline.errors import SeerecError

LOCAL_PREFIX = "local-dir:"
PACKAGE_PREFIX = "package:"


class ModelNotFoundError(SeerecError, ValueError):
    """A model folder named in the config does not exist."""


def model_location(spec: str, marker: str) -> str:
    """What a loader takes for `spec`: the folder of `local-dir:<path>`; the folder holding `marker` (e.g.
    model.bin) inside the package of `package:<module>`; a path-like name that must exist; else `spec` unchanged
    (a Hub id or a size name, which the loader fetches or finds in its cache)."""
    if spec.startswith(PACKAGE_PREFIX):
        return _package_folder(spec.removeprefix(PACKAGE_PREFIX), marker)
    path = spec.removeprefix(LOCAL_PREFIX)
    if spec.startswith(LOCAL_PREFIX) or spec.startswith(("/", "./", "../", "~")):
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ModelNotFoundError(f"model folder {folder} does not exist")
        return str(folder.resolve())
    return spec


def _package_folder(module: str, marker: str) -> str:
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(f"model package {module!r} is not installed (pip install it, or name another model)")
    root = Path(next(iter(found.submodule_search_locations)))
    hits = sorted(root.rglob(marker))
    if not hits:
        raise ModelNotFoundError(f"model package {module!r} holds no {marker}")
    return str(hits[0].parent)
