"""Decode video and image items into RGB frame arrays, the input of every vision stage.

Errors are data here: any problem with one item (missing, empty, corrupt, too big, unknown type) is raised
as `MediaError`, whose message is the one-line record a stage stores in its error column, and
`decode_batch` turns it into that column so one bad item never stops a Ray job.

Videos are decoded with decord where its wheel exists (Linux x86_64) and with PyAV elsewhere; both pick
the same frame indices (`frame_indices`) and scale with FFmpeg's swscale, so they give the same frames.
"""

from __future__ import annotations

import functools
import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import av
import numpy as np
from PIL import Image, ImageOps

from pipeline.config import MediaConfig
from pipeline.media_roots import LOCAL_SCHEMES, MediaRoots, local_path, uri_scheme

try:
    import decord

    VIDEO_BACKEND = "decord"
except (ImportError, OSError):  # no decord wheel for aarch64 or macOS, or a broken install
    decord = None
    VIDEO_BACKEND = "pyav"

MEDIA_TYPES = ("video", "image")
# URI schemes read straight from the local disk; any other scheme goes through pyarrow.fs.
_LOCAL_SCHEMES = LOCAL_SCHEMES
_MAX_MESSAGE = 300
_DECORD_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")

Source = str | BinaryIO  # a local path, or the bytes of a remote object


class MediaError(Exception):
    """One item could not be decoded; the message is its one-line error record."""


@dataclass
class DecodedMedia:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    timestamps: np.ndarray  # (T,) float32 seconds
    fps: float  # source fps (0.0 for images)
    indices: np.ndarray  # (T,) int64 source frame numbers, as video models' metadata wants them
    total_frames: int  # frames in the source (1 for images)


def frame_indices(num_source_frames: int, source_fps: float, cfg: MediaConfig) -> np.ndarray:
    """Which source frames to keep, in increasing order, for `cfg.sampling`.

    uniform: `cfg.num_frames` frames, each the centre of one of that many equal segments (never more frames
    than the video has). fps: one frame every 1/cfg.fps seconds from t=0, thinned the same uniform way to at
    most `cfg.max_frames`. An unknown source fps (0) makes fps mode fall back to uniform over max_frames.
    """
    if num_source_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    if cfg.sampling == "uniform":
        return _centres(num_source_frames, cfg.num_frames)
    if not source_fps or source_fps <= 0 or not np.isfinite(source_fps):
        return _centres(num_source_frames, cfg.max_frames)
    step = max(source_fps / cfg.fps, 1.0)  # source frames per sample; never repeat a frame
    count = int(np.ceil(num_source_frames / step - 1e-9))
    candidates = np.minimum(np.floor(np.arange(count) * step + 1e-9), num_source_frames - 1).astype(np.int64)
    return candidates[_centres(count, cfg.max_frames)]


def _centres(n: int, k: int) -> np.ndarray:
    """Indices of the centres of min(k, n) equal segments of range(n)."""
    k = min(k, n)
    return np.floor((np.arange(k) + 0.5) * n / k).astype(np.int64)


def _fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled down so the longer side is at most max_side, keeping the aspect ratio."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_item(uri: str, media_type: str, cfg: MediaConfig) -> DecodedMedia:
    """Decode one catalog item; every failure, whatever its cause, is a MediaError."""
    media_type = str(media_type) if isinstance(media_type, str) else media_type  # np.str_ -> str
    if media_type == "video":
        return decode_video(uri, cfg)
    if media_type == "image":
        return load_image(uri, cfg)
    raise MediaError(f"unknown media_type {media_type!r} (expected one of {', '.join(MEDIA_TYPES)})")


def decode_video(uri: str, cfg: MediaConfig, backend: str | None = None) -> DecodedMedia:
    """Sample frames of a video per `cfg`, with decord, or with PyAV when decord is absent or forced."""
    backend = backend or VIDEO_BACKEND
    if backend not in ("decord", "pyav"):
        raise ValueError(f"backend must be 'decord' or 'pyav', not {backend!r}")
    if backend == "decord" and decord is None:
        raise MediaError("video backend 'decord' is not installed on this platform")
    source = open_source(uri, "video", cfg.roots, cfg.max_file_mb)
    try:
        info = _probe_video(source)
        size = _fit(info.width, info.height, cfg.max_side)
        decode = _decord_video if backend == "decord" else _pyav_video
        return decode(source, info, size, cfg)
    except MediaError as exc:
        raise MediaError(f"video {uri} {exc}") from None
    except Exception as exc:  # decoders raise many types (DECORDError, av.FFmpegError, AssertionError, ...)
        raise item_failure("video", uri, "could not be decoded", exc) from None


@dataclass
class _VideoInfo:
    width: int
    height: int
    num_frames: int  # frames actually present in the file (counted packets)
    fps: float


def _probe_video(source: Source) -> _VideoInfo:
    """Read the header and count packets without decoding: cheap, and the only way to catch truncation.

    decord must be told the output size upfront, and it silently samples from whatever part of a truncated
    file is present, so a file holding fewer frames than its header lists is refused here.
    """
    with av.open(rewound(source)) as container:
        if not container.streams.video:
            raise MediaError("has no video stream")
        stream = container.streams.video[0]
        if not stream.width or not stream.height:
            raise MediaError("has no frame size in its header")
        present = sum(1 for packet in container.demux(stream) if packet.size)
        if present < stream.frames:
            raise MediaError(
                f"is truncated: its header lists {stream.frames} frames, the file holds {present}"
            )
        if present == 0:
            raise MediaError("has zero frames")
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        return _VideoInfo(stream.width, stream.height, present, fps)


def _decord_video(source: Source, info: _VideoInfo, size: tuple[int, int], cfg: MediaConfig) -> DecodedMedia:
    reader = decord.VideoReader(rewound(source), ctx=decord.cpu(0), width=size[0], height=size[1])
    fps = float(reader.get_avg_fps() or info.fps)
    total = len(reader)
    indices = frame_indices(total, fps, cfg)
    frames = reader.get_batch(indices).asnumpy()
    reader.seek(0)  # decord keeps decoded state after a big get_batch; seeking back releases it
    del reader
    return DecodedMedia(frames, _times(indices, fps), fps, indices.astype(np.int64), total)


def _pyav_video(source: Source, info: _VideoInfo, size: tuple[int, int], cfg: MediaConfig) -> DecodedMedia:
    """Decode in presentation order, counting frames, so that index i is the frame decord returns for i.

    Keyframes in short videos are often seconds apart, so seeking saves little over one sequential pass,
    which stops after the last wanted frame.
    """
    indices = frame_indices(info.num_frames, info.fps, cfg)
    wanted = iter(indices.tolist())
    target = next(wanted)
    frames = []
    with av.open(rewound(source)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i < target:
                continue
            rgb = frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="BICUBIC")
            frames.append(rgb)
            target = next(wanted, None)
            if target is None:
                break
    if target is not None:
        raise MediaError(f"is corrupt: decoding ended before frame {target} of {info.num_frames}")
    return DecodedMedia(np.stack(frames), _times(indices, info.fps), info.fps, indices.astype(np.int64),
                        info.num_frames)


def _times(indices: np.ndarray, fps: float) -> np.ndarray:
    """Nominal frame times (index / fps); both backends report the same ones."""
    return (indices / fps if fps > 0 else np.zeros(len(indices))).astype(np.float32)


def load_image(uri: str, cfg: MediaConfig) -> DecodedMedia:
    """Read an image as one RGB frame, refusing decompression bombs before any pixel is decoded."""
    source = open_source(uri, "image", cfg.roots, cfg.max_file_mb)
    limit = cfg.max_image_pixels
    bomb = MediaError(f"image {uri} exceeds the {limit}-pixel limit (decompression bomb guard)")
    # PIL's guard is a process-wide setting: set it for this call. PIL warns above it and raises above 2x.
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(rewound(source)) as img:
                if img.width * img.height > limit:
                    raise bomb
                size = _fit(img.width, img.height, cfg.max_side)
                img.draft("RGB", size)  # JPEG: decode at reduced scale when that suffices
                rgb = _to_rgb(ImageOps.exif_transpose(img))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise bomb from None
    except MediaError:
        raise
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError, ...
        raise item_failure("image", uri, "could not be decoded", exc) from None
    size = _fit(rgb.width, rgb.height, cfg.max_side)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    frames = np.asarray(rgb, dtype=np.uint8)[None]
    return DecodedMedia(frames, np.zeros(1, np.float32), 0.0, np.zeros(1, np.int64), 1)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with transparent areas shown on white as a viewer would (product photos are often cut out)."""
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA"))
    return img.convert("RGB")


def open_source(uri: str, kind: str, roots: Sequence[str], max_file_mb: float) -> Source:
    """Check that the object lies inside media.roots, exists, is a regular file, is not empty and not too
    big; return a local path or its bytes. Ingest checks the roots too, but a store row may come from
    elsewhere, so nothing is opened unchecked."""
    if not isinstance(uri, str) or not uri.strip():
        # Ingest keeps a row whose uri it refused (outside media.roots, say) but drops the uri: point there.
        raise MediaError(f"{kind} item has no media_uri (its ingest_error says why)")
    refusal = _roots(tuple(roots)).refusal(uri)
    if refusal:
        raise MediaError(refusal)
    if uri_scheme(uri) in _LOCAL_SCHEMES:
        try:
            path = local_path(uri).resolve()  # the very file the roots check resolved, not a symlink to re-follow
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
            raise item_failure(kind, uri, "cannot be resolved", exc) from None
        if not path.exists():
            raise MediaError(f"{kind} {uri} is missing")
        if not path.is_file():  # a folder, a device such as /dev/zero, a FIFO that would block the reader
            raise MediaError(f"{kind} {uri} is not a regular file")
        _check_size(uri, path.stat().st_size, max_file_mb)
        return str(path)
    try:
        import pyarrow.fs

        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
        info = fs.get_file_info(path)
        if info.type == pyarrow.fs.FileType.NotFound:
            raise MediaError(f"{kind} {uri} is missing")
        if info.type != pyarrow.fs.FileType.File:
            raise MediaError(f"{kind} {uri} is not a regular file")
        _check_size(uri, info.size, max_file_mb)
        with fs.open_input_file(path) as remote:
            return io.BytesIO(remote.read())
    except MediaError:
        raise
    except Exception as exc:  # unknown scheme, no credentials, network errors
        raise item_failure(kind, uri, "could not be read", exc) from None


@functools.lru_cache(maxsize=8)
def _roots(roots: tuple[str, ...]) -> MediaRoots:
    """The configured roots, resolved once per decoder process; none configured: local files only."""
    return MediaRoots(roots or None)


def _check_size(uri: str, size: int, max_file_mb: float) -> None:
    if size == 0:
        raise MediaError(f"file {uri} is empty")
    if size > max_file_mb * 2**20:
        raise MediaError(f"file {uri} is {size / 2**20:.1f} MB, over the {max_file_mb:g} MB limit")


def rewound(source: Source) -> Source:
    """The same source, read from its start again (in-memory bytes are read more than once)."""
    if not isinstance(source, str):
        source.seek(0)
    return source


def item_failure(kind: str, uri: str, what: str, exc: Exception) -> MediaError:
    """A one-line error record that names the item and the underlying exception."""
    detail = _DECORD_PREFIX.sub("", str(exc))  # drop decord's "[12:00:00] /src/file.cc:292: " noise
    message = " ".join(f"{kind} {uri} {what} ({type(exc).__name__}: {detail})".split())
    return MediaError(message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 4] + "...)")


def decode_batch(batch: dict[str, np.ndarray], cfg: MediaConfig) -> dict[str, np.ndarray]:
    """Ray Data `map_batches(batch_format="numpy")` stage: add `frames`, `frame_times`, `frame_indices`,
    `source_fps`, `source_frames` and `media_error`.

    A failed row gets an empty (0, 1, 1, 3) frame array, empty times and its error record; it never raises.
    """
    n = len(batch["item_id"])
    frames = np.empty(n, dtype=object)
    times = np.empty(n, dtype=object)
    errors = np.empty(n, dtype=object)
    indices = np.array([np.zeros(0, np.int64) for _ in range(n)] + [None], dtype=object)[:n]
    fps = np.zeros(n, np.float32)
    totals = np.zeros(n, np.int64)
    for i, (uri, media_type) in enumerate(zip(batch["media_uri"], batch["media_type"], strict=True)):
        try:
            decoded = decode_item(uri, media_type, cfg)
            frames[i], times[i], errors[i] = decoded.frames, decoded.timestamps, None
            indices[i], fps[i], totals[i] = decoded.indices, decoded.fps, decoded.total_frames
        except MediaError as exc:
            frames[i], times[i], errors[i] = *_empty(), str(exc)
        except Exception as exc:  # a bug of ours should still cost one row, not the job
            frames[i], times[i] = _empty()
            errors[i] = str(item_failure(media_type, uri, "failed unexpectedly", exc))
    return {**batch, "frames": frames, "frame_times": times, "frame_indices": indices, "source_fps": fps,
            "source_frames": totals, "media_error": errors}


def _empty() -> tuple[np.ndarray, np.ndarray]:
    """Frames and times of a failed row (fresh arrays, so no two rows share a buffer)."""
    return np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0, np.float32)


class FrameDecoder:
    """Callable class for `map_batches(FrameDecoder, fn_constructor_kwargs={"cfg": cfg, "roots": roots}, ...)`.

    `roots` (the runner's `decoder_roots`) replace `cfg.roots`: the runner resolves the default roots once."""

    def __init__(self, cfg: MediaConfig | dict[str, Any], roots: Sequence[str] | None = None):
        self.cfg = cfg if isinstance(cfg, MediaConfig) else MediaConfig.model_validate(cfg)
        if roots is not None:
            self.cfg = self.cfg.model_copy(update={"roots": list(roots)})

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return decode_batch(batch, self.cfg)
