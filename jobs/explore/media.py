"""Serving an item's media file to the browser, with HTTP Range requests so that a <video> can seek.

One range is answered with a 206 and that range; several (as some players and download tools ask) with a 206
`multipart/byteranges` body whose parts come in the order asked, overlapping or adjacent ranges merged into one
part (RFC 9110 15.3.7). A header this code cannot read, another unit than bytes or more than MAX_PARTS parts is
ignored and the whole file sent (RFC 9110 14.2 lets a server ignore Range); one that names no byte is a 416.

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
MAX_PARTS = 16  # more ranges than this (after merging) are answered with the whole file
_SPEC = re.compile(r"^(\d*)-(\d*)$")


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
            yield from _chunks(handle, start, end)

    def multipart(self, ranges: list[tuple[int, int]], boundary: str) -> tuple[int, Iterator[bytes]]:
        """(Content-Length, body) of a `multipart/byteranges` response with one part per range."""
        heads = [f"--{boundary}\r\nContent-Type: {self.content_type}\r\n"
                 f"Content-Range: bytes {start}-{end}/{self.size}\r\n\r\n".encode() for start, end in ranges]
        tail = f"--{boundary}--\r\n".encode()
        length = sum(len(h) + end - start + 1 + 2 for h, (start, end) in zip(heads, ranges, strict=True)) + len(tail)

        def body() -> Iterator[bytes]:
            with self.fs.open_input_file(self.path) as handle:
                for head, (start, end) in zip(heads, ranges, strict=True):
                    yield head
                    yield from _chunks(handle, start, end)
                    yield b"\r\n"
            yield tail

        return length, body()


def _chunks(handle, start: int, end: int) -> Iterator[bytes]:
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


def byte_ranges(header: str | None, size: int) -> list[tuple[int, int]] | None:
    """The (first, last) bytes a Range header asks for, merged where they overlap or touch, in the order asked;
    None for the whole file (no header, or one to ignore); RangeNotSatisfiable when none names a byte."""
    unit, _, specs = (header or "").partition("=")
    if unit.strip().lower() != "bytes":
        return None
    asked = []
    for spec in specs.split(","):
        match = _SPEC.match(spec.strip())
        if not match or match.group(1) == match.group(2) == "":
            return None
        first, last = match.groups()
        if first == "":  # the last n bytes (none for n = 0)
            if int(last) == 0:
                continue
            start, end = max(0, size - int(last)), size - 1
        elif last and int(last) < int(first):
            return None
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start < size:
            asked.append((start, end))
    if not asked:
        raise RangeNotSatisfiable(f"the range {header!r} lies outside the file's {size} bytes")
    merged: list[list[int]] = []  # [start, end, position of its first range in the header]
    for position in sorted(range(len(asked)), key=asked.__getitem__):
        start, end = asked[position]
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1:] = max(merged[-1][1], end), min(merged[-1][2], position)
        else:
            merged.append([start, end, position])
    if len(merged) > MAX_PARTS:
        return None
    return [(start, end) for start, end, _ in sorted(merged, key=lambda m: m[2])]
