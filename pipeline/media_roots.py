"""Where media may be read from: the local folders and URI prefixes of `media.roots`.

A catalog row names a file for the decoders to open, so without a fence a hostile manifest (or whoever can
write the store) could make seerec read `/etc/shadow` or a cloud metadata endpoint. Ingest refuses a row
outside the roots (its `ingest_error`), and the decoders check again before they open anything. Local paths
are compared after `..` and symlinks are resolved; a remote URI must start with a configured prefix of the
same scheme, so remote reads happen only where a root allows them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
LOCAL_SCHEMES = ("", "file")


def uri_scheme(uri: str) -> str:
    """The lower-case scheme of `s3://...`-style URIs; "" for a plain path."""
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else ""


def local_path(uri: str) -> Path:
    """The path a plain path or `file://` URI names."""
    return Path(unquote(urlparse(uri).path)) if uri_scheme(uri) == "file" else Path(uri)


def _catalog_folder(path: str | Path) -> str:
    """The default root of a catalog: a manifest's own folder, or the dataset folder itself."""
    text = str(path)
    if uri_scheme(text) not in LOCAL_SCHEMES:
        return text if text.endswith("/") else text.rsplit("/", 1)[0] + "/"
    folder = local_path(text).resolve()
    return str(folder if folder.is_dir() else folder.parent)


class MediaRoots:
    """A set of allowed roots; `None` allows any local file (never a remote URI)."""

    def __init__(self, roots: Iterable[str] | None):
        self.roots = None if roots is None else list(roots)
        self._folders = [local_path(r).resolve() for r in self.roots or () if uri_scheme(r) in LOCAL_SCHEMES]
        self._prefixes = [_remote(r).rstrip("/") + "/" for r in self.roots or () if uri_scheme(r) not in LOCAL_SCHEMES]

    @classmethod
    def for_catalog(cls, roots: Sequence[str], catalog: str | Path) -> MediaRoots:
        """The configured roots, or by default the catalog's own folder (a manifest's folder, a dataset folder)."""
        return cls(roots or [_catalog_folder(catalog)])

    def refusal(self, uri: str, shown: str | None = None) -> str | None:
        """Why `uri` may not be read (a sentence naming it, or `shown` in its place), or None when a root
        allows it."""
        scheme = uri_scheme(uri)
        label = shown or uri
        if scheme in LOCAL_SCHEMES:
            if self.roots is None:
                return None
            try:
                resolved = local_path(uri).resolve()
            except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
                return f"media_uri {label} cannot be resolved ({type(exc).__name__})"
            if any(resolved.is_relative_to(folder) for folder in self._folders):
                return None
            return f"media_uri {label} is outside the media roots ({self._listed()}); add its folder to media.roots"
        if ".." in unquote(urlparse(uri).path).split("/"):
            return f"media_uri {label} has a '..' segment in its path, which is never read"
        remote = _remote(uri)
        if any(remote.startswith(p) for p in self._prefixes):
            return None
        if not any(p.startswith(f"{scheme}://") for p in self._prefixes):
            return (f"media_uri {label} is a remote {scheme}:// URI and media.roots names no {scheme}:// prefix "
                    "(add one to allow it)")
        return f"media_uri {label} is outside the media roots ({self._listed()}); add its prefix to media.roots"

    def _listed(self) -> str:
        return ", ".join(self.roots or ()) or "none"


def _remote(uri: str) -> str:
    """`scheme://rest` with a lower-case scheme, as prefixes are compared."""
    scheme, rest = uri.split("://", 1)
    return f"{scheme.lower()}://{rest}"
