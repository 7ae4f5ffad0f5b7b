"""Short audio clips cut from the real MicroLens sample videos, for the audio benchmarks (real speech and music)."""

from __future__ import annotations

import sys
from pathlib import Path

from common import REPO

sys.path.insert(0, str(REPO))  # the tests' sound-file writer is not an installed package

from pipeline.audio import decode_audio  # noqa: E402
from pipeline.config import AudioConfig  # noqa: E402
from tests.audio_files import write_audio  # noqa: E402

VIDEOS = REPO.parent / "shared" / "data" / "microlens-sample" / "videos"
NAMES = ["1002", "10034", "10040"]
RATE = 44100  # the sample videos' own rate, so the clips are resampled to 16 kHz when decoded, as real items are


def sample_videos() -> list[Path]:
    paths = [VIDEOS / f"{name}.mp4" for name in NAMES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"benchmark videos are absent: {', '.join(missing)}")
    return paths


def make_clips(out_dir: Path, seconds: float, hop: float) -> list[Path]:
    """AAC (.m4a) clips of `seconds`, starting every `hop` seconds through each sample video's sound."""
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = []
    for video in sample_videos():
        sound = decode_audio(str(video), "video", AudioConfig(sample_rate=RATE, max_seconds=3600)).samples
        length, step = int(seconds * RATE), int(hop * RATE)
        for n, start in enumerate(range(0, len(sound) - length + 1, step)):
            clips.append(write_audio(out_dir / f"{video.stem}-{n:02d}.m4a", sound[None, start:start + length], RATE))
    return clips
