"""Decode the sound of video and audio items into mono float32 sample arrays, the input of every audio stage.

As for frames (`pipeline.media`), a problem with one item is a `MediaError` whose message is its error
record. An item that has no audio stream at all is not an error but an outcome of its own (`NO_AUDIO`):
the stage records it as skipped, so it is counted and not retried on every run.

Long items are capped at `max_seconds` without decoding the rest: `first` stops decoding there, `spread`
seeks to each of its evenly spaced pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from pipeline.config import AudioConfig
from pipeline.media import MediaError, Source, item_failure, open_source, rewound

NO_AUDIO = "no audio stream"
AUDIO_MEDIA_TYPES = ("video", "audio")
# A decoded stream this much shorter than its header says (and than the cap) is truncated; AAC and MP3
# headers round their durations to a frame or two.
_SHORTFALL_S = 0.5


class NoAudioStream(Exception):
    """The item has no audio stream: a recorded outcome, not a failure."""


@dataclass
class DecodedAudio:
    samples: np.ndarray  # (N,) float32 mono at the configured rate
    seconds: float  # length of `samples`
    source_seconds: float  # the whole stream's length per its header (0.0 when the header does not say)


def decode_audio(uri: str, media_type: str, cfg: AudioConfig, roots: Sequence[str] = ()) -> DecodedAudio:
    """The sound of one item; every failure is a MediaError, a silent video a NoAudioStream. Only media
    inside `roots` is opened (none given: local files only, as for frames)."""
    media_type = str(media_type) if isinstance(media_type, str) else media_type
    if media_type not in AUDIO_MEDIA_TYPES:
        raise MediaError(f"{media_type!r} items have no sound to decode (expected {' or '.join(AUDIO_MEDIA_TYPES)})")
    source = open_source(uri, media_type, roots, cfg.max_file_mb)
    try:
        return _decode(source, cfg)
    except NoAudioStream:
        raise
    except MediaError as exc:
        raise MediaError(f"{media_type} {uri} {exc}") from None
    except Exception as exc:  # av.FFmpegError, ValueError from odd layouts, ...
        raise item_failure(media_type, uri, "could not be decoded", exc) from None


def _decode(source: Source, cfg: AudioConfig) -> DecodedAudio:
    with av.open(rewound(source)) as container:
        if not container.streams.audio:
            raise NoAudioStream(NO_AUDIO)
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        total = _header_seconds(container, stream)
        if cfg.spread == "first" or not total or total <= cfg.max_seconds:
            pieces = [(0.0, min(cfg.max_seconds, total or cfg.max_seconds))]
        else:
            length = cfg.max_seconds / cfg.spread_segments
            step = (total - length) / (cfg.spread_segments - 1)
            pieces = [(i * step, length) for i in range(cfg.spread_segments)]
        samples = [_piece(container, stream, start, seconds, cfg.sample_rate, bool(total)) for start, seconds in pieces]
    audio = np.concatenate(samples) if samples else np.zeros(0, np.float32)
    if not len(audio):
        raise MediaError("has an empty audio stream")
    peak = float(np.abs(audio).max())
    if peak > 1.0:  # a downmix of many loud channels (7.1) sums past full scale; models expect [-1, 1]
        audio /= peak
    return DecodedAudio(audio, len(audio) / cfg.sample_rate, total)


def _header_seconds(container, stream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else 0.0


def _piece(container, stream, start: float, seconds: float, rate: int, known_length: bool) -> np.ndarray:
    """`seconds` of sound from `start`, resampled: seek back to the packet before it, drop what precedes it."""
    if start > 0:
        container.seek(int(start / stream.time_base), stream=stream)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    wanted = int(round(seconds * rate))
    chunks, have, first_time = [], 0, None
    for frame in _frames(container, stream):
        if first_time is None:
            first_time = float(frame.pts * stream.time_base) if frame.pts is not None else start
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray().reshape(-1))
            have += len(chunks[-1])
        if have >= wanted + int(max(0.0, start - first_time) * rate):
            break
    chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    drop = int(round(max(0.0, start - (first_time if first_time is not None else start)) * rate))
    audio = audio[drop:drop + wanted]
    if known_length and len(audio) < wanted - _SHORTFALL_S * rate:
        raise MediaError(f"is truncated: its header lists {start + seconds:.1f} s of audio, "
                         f"decoding ended at {start + len(audio) / rate:.1f} s")
    return audio.astype(np.float32, copy=False)


def _frames(container, stream):
    """The stream's decoded frames. A packet that fails to decode stops the item unless it is the stream's last:
    a file cut short ends in a partial packet, which one decoding thread reports and frame threads drop, so
    the shortfall check, not the thread count, decides the error record."""
    failed = None
    for packet in container.demux(stream):
        if failed is not None and packet.size:  # a real packet after the bad one: corrupt, not cut short
            raise failed
        try:
            yield from packet.decode()
        except av.error.InvalidDataError as exc:
            failed = exc


def decode_audio_batch(batch: dict[str, np.ndarray], cfg: AudioConfig,
                       roots: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Ray Data `map_batches(batch_format="numpy")` stage: add `audio`, `audio_seconds`, `error`, `skipped`.

    A failed or skipped row gets an empty sample array, 0 seconds, and its error record or skip reason; it
    never raises.
    """
    n = len(batch["item_id"])
    audio = np.array([np.zeros(0, np.float32) for _ in range(n)] + [None], dtype=object)[:n]
    seconds = np.zeros(n, np.float32)
    errors = np.full(n, None, dtype=object)
    skipped = np.full(n, None, dtype=object)
    for i, (uri, media_type) in enumerate(zip(batch["media_uri"], batch["media_type"], strict=True)):
        try:
            decoded = decode_audio(uri, media_type, cfg, roots)
            audio[i], seconds[i] = decoded.samples, decoded.seconds
        except NoAudioStream as outcome:
            skipped[i] = str(outcome)
        except MediaError as exc:
            errors[i] = str(exc)
        except Exception as exc:  # a bug of ours should still cost one row, not the job
            errors[i] = str(item_failure(media_type, uri, "failed unexpectedly", exc))
    return {**batch, "audio": audio, "audio_seconds": seconds, "error": errors, "skipped": skipped}


class AudioDecoder:
    """Callable class for `map_batches(AudioDecoder, fn_constructor_kwargs={"cfg": cfg, "roots": roots}, ...)`."""

    def __init__(self, cfg: AudioConfig | dict[str, Any], roots: Sequence[str] = ()):
        self.cfg = cfg if isinstance(cfg, AudioConfig) else AudioConfig.model_validate(cfg)
        self.roots = tuple(roots)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return decode_audio_batch(batch, self.cfg, self.roots)
