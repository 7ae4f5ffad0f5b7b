"""Thumbnails: one keyframe per item, decoded by seerec's own decoder and cached as a JPEG on disk.

The cache is a folder beside the store, never inside it (the explorer does not write to the store). A file is
named by a hash of the item id and its media_uri, so a re-ingested item with a new file gets a new thumbnail.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from pathlib import Path

from PIL import Image

from pipeline.config import MediaConfig
from pipeline.media import MediaError, decode_item
from pipeline.media_roots import LOCAL_SCHEMES, local_path, uri_scheme

log = logging.getLogger("seerec.explore")

THUMB_SIDE = 320


def default_cache_dir(store_uri: str) -> Path:
    """`<store folder>.explore-cache` beside a local store; `./seerec-explore-cache` for an object store."""
    if uri_scheme(store_uri) in LOCAL_SCHEMES:
        store = local_path(store_uri).resolve()
        return store.with_name(f"{store.name}.explore-cache")
    return Path("seerec-explore-cache").resolve()


class Thumbnails:
    """Keyframe JPEGs of items, made on first request with `media` settings (its roots decide what is read)."""

    def __init__(self, cache_dir: Path, media: MediaConfig):
        self.cache_dir = Path(cache_dir)
        self.media = media.model_copy(update={"sampling": "uniform", "num_frames": 1, "max_side": THUMB_SIDE})

    def get(self, item_id: str, uri: str, media_type: str) -> bytes:
        """The JPEG of the item's middle frame (its picture, for an image); MediaError when it cannot be made."""
        digest = hashlib.sha256("\0".join((item_id, uri)).encode()).hexdigest()[:32]
        path = self.cache_dir / f"{digest}.jpg"
        if path.is_file():
            return path.read_bytes()
        if media_type not in ("video", "image"):
            raise MediaError(f"{media_type} items have no picture")
        frame = decode_item(uri, media_type, self.media).frames[0]
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=85)
        data = buffer.getvalue()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Written whole, then renamed: two requests for one thumbnail never see half a file.
        handle, temporary = tempfile.mkstemp(dir=self.cache_dir, suffix=".part")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
        log.debug("made thumbnail of %s in %s", item_id, path)
        return data
