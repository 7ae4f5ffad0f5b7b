"""Serving an item's media file to the browser, with HTTP Range requests so that a <video> can seek.

The URL names an item, never a path: the file served is the `media_uri` the store holds for that item, and only
when the explorer's media roots allow it (`pipeline.media_roots`, with `..` and symlinks resolved), so neither a
crafted URL nor a hostile store row can make the app read a file outside the roots. Local files and object
stores (s3://, gs://, ...) go through the same pyarrow file system code: remote media is streamed through the
app in chunks, never handed to the browser as a bucket URL.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.fs

from pipeline.errors import SeerecError
from pipeline.media import MediaError, open_source
from pipeline.media_roots import LOCAL_SCHEMES, MediaRoots, uri_scheme

CHUNK = 1 << 20  # bytes read per step of a streamed response
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class MediaRefused(SeerecError):
    """The item's media may not be served (outside the roots, missing, not a regular file); a sentence."""


class RangeNotSatisfiable(SeerecError):
    """A Range header that names no byte of the file."""


@dataclass
class MediaFile:
    fs: pyarrow.fs.FileSystem
    path: str
    size: int
    content_type: str

    def read(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes start..end (inclusive), in chunks."""
        with self.fs.open_input_file(self.path) as handle:
            handle.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = handle.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk


def open_media(uri: str, media_type: str, roots: MediaRoots, max_file_mb: float) -> MediaFile:
    """The file an item's media_uri names, after the roots check and the decoders' own file checks."""
    if not isinstance(uri, str) or not uri:
        raise MediaRefused("this item has no media_uri")
    refusal = roots.refusal(uri)
    if refusal:
        raise MediaRefused(refusal)
    if uri_scheme(uri) in LOCAL_SCHEMES:
        try:  # the decoders' checks: exists, regular file, not empty, not over the size limit; resolved path
            path = open_source(uri, media_type, roots.roots or (), max_file_mb)
        except MediaError as exc:
            raise MediaRefused(str(exc)) from None
        fs = pyarrow.fs.LocalFileSystem()
    else:
        try:
            fs, path = pyarrow.fs.FileSystem.from_uri(uri)
        except Exception as exc:  # unknown scheme, no credentials
            raise MediaRefused(f"media_uri {uri} cannot be opened ({type(exc).__name__})") from None
    info = fs.get_file_info(path)
    if info.type != pyarrow.fs.FileType.File:
        raise MediaRefused(f"media_uri {uri} is missing or not a regular file")
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return MediaFile(fs, path, info.size, content_type)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range; None for the whole file.

    Several ranges in one header are answered with the whole file (RFC 9110 lets a server ignore Range)."""
    if not header or "," in header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last n bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable(f"the range {header!r} lies outside the file's {size} bytes")
    return start, end
