"""Sound files for the audio tests and benchmarks, written with PyAV: tones, silence, many channels, no sound."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

# Encoder, container and sample format per file suffix.
_CODECS = {".wav": ("pcm_s16le", "s16"), ".flac": ("flac", "s16"), ".mp3": ("libmp3lame", "fltp"),
           ".m4a": ("aac", "fltp")}


def ramp_tone(seconds: float, rate: int, channels: int = 1, hz: float = 440.0) -> np.ndarray:
    """A tone whose loudness grows linearly from 0 to 0.9 over the clip, so a piece's level tells its time."""
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.9 * t / max(seconds, 1e-9) * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return np.repeat(mono[None], channels, axis=0)


def write_audio(path: Path, samples: np.ndarray, rate: int, layout: str = "mono", bit_rate: int | None = None,
                video: bool = False) -> Path:
    """Encode (channels, N) float samples into `path` (by its suffix; .mp4 adds a video stream when asked)."""
    codec, fmt = _CODECS.get(path.suffix, ("aac", "fltp"))
    with av.open(str(path), "w") as container:
        if video:
            picture = container.add_stream("mpeg4", rate=4)
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        stream = container.add_stream(codec, rate=rate, layout=layout)
        if bit_rate:
            stream.bit_rate = bit_rate
        chunk = 4096
        for offset in range(0, samples.shape[1], chunk):
            piece = samples[:, offset:offset + chunk]
            data = (piece * 32767).astype(np.int16).T.reshape(1, -1) if fmt == "s16" else piece.astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
            frame.sample_rate = rate
            frame.pts = offset
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if video:
            for i in range(int(samples.shape[1] / rate * 4)):
                grey = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 8 * i % 255, np.uint8), format="rgb24")
                container.mux(picture.encode(grey))
            container.mux(picture.encode(None))
    return path


def write_silent_video(path: Path, seconds: float = 2.0) -> Path:
    """A video with no audio stream at all."""
    with av.open(str(path), "w") as container:
        picture = container.add_stream("mpeg4", rate=4)
        picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        for i in range(int(seconds * 4)):
            grey = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 8 * i, np.uint8), format="rgb24")
            container.mux(picture.encode(grey))
        container.mux(picture.encode(None))
    return path
