"""Tests for pipeline.audio: real decoding of videos' and audio files' sound, the cap, and every bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.audio import NO_AUDIO, AudioDecoder, NoAudioStream, decode_audio
from pipeline.config import AudioConfig
from pipeline.media import MediaError
from tests.audio_files import ramp_tone, write_audio, write_silent_video
from tests.helpers import require_shared

REAL_VIDEOS = ["1002", "10034", "10040"]


def _piece_peaks(audio: np.ndarray, pieces: int) -> list[float]:
    return [float(np.abs(p).max()) for p in np.array_split(audio, pieces)]


@pytest.mark.parametrize("name", REAL_VIDEOS)
def test_real_videos_give_16_khz_mono(name):
    path = require_shared("microlens-sample", "videos", f"{name}.mp4")
    decoded = decode_audio(str(path), "video", AudioConfig())
    assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    assert decoded.seconds == pytest.approx(decoded.source_seconds, abs=0.05)
    assert len(decoded.samples) == pytest.approx(decoded.source_seconds * 16000, abs=800)
    assert 0.01 < np.abs(decoded.samples).max() <= 1.0  # real sound, within full scale


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".m4a", ".flac"])
def test_audio_only_files(tmp_path, suffix):
    path = write_audio(tmp_path / f"tone{suffix}", ramp_tone(3.0, 44100), 44100)
    decoded = decode_audio(str(path), "audio", AudioConfig())
    assert decoded.seconds == pytest.approx(3.0, abs=0.05)
    assert np.abs(decoded.samples[-1600:]).max() == pytest.approx(0.9, abs=0.08)  # the ramp's loud end


def test_7_1_at_96_khz_is_downmixed_and_resampled_within_full_scale(tmp_path):
    path = write_audio(tmp_path / "surround.flac", ramp_tone(2.0, 96000, channels=8), 96000, layout="7.1")
    decoded = decode_audio(str(path), "audio", AudioConfig())
    assert len(decoded.samples) == 32000
    assert np.abs(decoded.samples).max() == pytest.approx(1.0, abs=1e-6)


def test_other_sample_rates(tmp_path):
    path = write_audio(tmp_path / "tone.wav", ramp_tone(2.0, 22050), 22050)
    assert len(decode_audio(str(path), "audio", AudioConfig(sample_rate=48000)).samples) == 96000


def test_video_with_sound(tmp_path):
    path = write_audio(tmp_path / "clip.mp4", ramp_tone(2.0, 44100), 44100, video=True)
    assert decode_audio(str(path), "video", AudioConfig()).seconds == pytest.approx(2.0, abs=0.05)


def test_silence_decodes_as_silence(tmp_path):
    path = write_audio(tmp_path / "quiet.wav", np.zeros((1, 44100 * 2), np.float32), 44100)
    decoded = decode_audio(str(path), "audio", AudioConfig())
    assert decoded.seconds == pytest.approx(2.0) and not decoded.samples.any()


@pytest.fixture(scope="module", params=[(600.0, 8000, 440.0), (10800.0, 1000, 100.0)], ids=["10-minutes", "3-hours"])
def long_file(request, tmp_path_factory) -> tuple[Path, float]:
    """Long ramps in FLAC (seeks land exactly), and how long each is. The 3-hour one is a real 3-hour stream
    at 1 kHz (a 100 Hz tone): 10 MB, written in 2-4 s, and resampled to 16 kHz like any other rate."""
    seconds, rate, hz = request.param
    path = tmp_path_factory.mktemp("long") / f"long-{int(seconds)}s.flac"
    return write_audio(path, ramp_tone(seconds, rate, hz=hz), rate), seconds


def test_a_long_file_is_cut_to_its_first_seconds(long_file):
    path, seconds = long_file
    decoded = decode_audio(str(path), "audio", AudioConfig(max_seconds=8))
    assert decoded.seconds == 8.0 and decoded.source_seconds == pytest.approx(seconds)
    assert np.abs(decoded.samples).max() < 0.9 * 8 / seconds + 0.01  # only the quiet start was decoded


def test_spread_takes_evenly_spaced_pieces(long_file):
    path, seconds = long_file
    decoded = decode_audio(str(path), "audio", AudioConfig(max_seconds=8, spread="spread", spread_segments=4))
    assert decoded.seconds == 8.0
    # Pieces start at 0, 1/3, 2/3 of the way and end at the end: the ramp's level at each piece's end (the
    # upsampled 1 kHz tone overshoots its peak by about 1%).
    step = (seconds - 2) / 3
    expected = [0.9 * (i * step + 2) / seconds for i in range(4)]
    assert _piece_peaks(decoded.samples, 4) == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize("spread", ["first", "spread"])
def test_the_stage_decoder_caps_a_long_file(long_file, spread):
    """The decode pool's function at the default 120 s: an error-free row whose length is the cap, whatever the
    file's (all 3 hours at 16 kHz would be 173M samples, 690 MB of float32)."""
    path, _ = long_file
    batch = {"item_id": np.array(["long"], object), "media_uri": np.array([str(path)], object),
             "media_type": np.array(["audio"], object)}
    out = AudioDecoder(AudioConfig(spread=spread))(batch)
    assert (out["error"][0], out["skipped"][0], out["audio_seconds"][0]) == (None, None, 120.0)
    assert out["audio"][0].shape == (120 * 16000,)


def test_spread_on_a_short_item_decodes_it_whole(tmp_path):
    path = write_audio(tmp_path / "short.flac", ramp_tone(3.0, 8000), 8000)
    assert decode_audio(str(path), "audio", AudioConfig(max_seconds=8, spread="spread")).seconds == 3.0


def test_no_audio_stream_is_an_outcome_not_an_error(tmp_path):
    path = write_silent_video(tmp_path / "silent.mp4")
    with pytest.raises(NoAudioStream, match=NO_AUDIO):
        decode_audio(str(path), "video", AudioConfig())


@pytest.mark.parametrize("cpus", ["all", "one"])
def test_truncated_audio(tmp_path, cpus):
    """On one CPU the decoder runs one thread, which reports the cut packet that frame threads drop."""
    data = write_audio(tmp_path / "whole.flac", ramp_tone(6.0, 44100), 44100).read_bytes()
    (tmp_path / "half.flac").write_bytes(data[: len(data) // 2])
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, allowed if cpus == "all" else {min(allowed)})
    try:
        with pytest.raises(MediaError, match=r"half.flac is truncated: its header lists 6.0 s of audio, decoding"):
            decode_audio(str(tmp_path / "half.flac"), "audio", AudioConfig())
    finally:
        os.sched_setaffinity(0, allowed)


def test_half_a_real_video_is_truncated(tmp_path):
    data = require_shared("microlens-sample", "videos", "1002.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="is truncated"):
        decode_audio(str(tmp_path / "half.mp4"), "video", AudioConfig())


def test_corrupt_and_random_bytes(tmp_path):
    data = bytearray(require_shared("microlens-sample", "videos", "1002.mp4").read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 4
    data[start:start + 200_000] = rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    (tmp_path / "corrupt.mp4").write_bytes(bytes(data))
    (tmp_path / "noise.m4a").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    for name in ("corrupt.mp4", "noise.m4a"):
        with pytest.raises(MediaError, match=f"{name} could not be decoded"):
            decode_audio(str(tmp_path / name), "video", AudioConfig())


def test_missing_empty_too_big_and_wrong_type(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    tone = write_audio(tmp_path / "tone.wav", ramp_tone(1.0, 16000), 16000)
    cases = [(tmp_path / "absent.wav", "audio", AudioConfig(), "is missing"),
             (tmp_path / "empty.wav", "audio", AudioConfig(), "is empty"),
             (tone, "audio", AudioConfig(max_file_mb=0.001), "over the 0.001 MB limit"),
             (tone, "image", AudioConfig(), "'image' items have no sound")]
    for path, media_type, cfg, message in cases:
        with pytest.raises(MediaError, match=message):
            decode_audio(str(path), media_type, cfg)


def test_decoder_batch_keeps_every_row(tmp_path):
    good = write_audio(tmp_path / "tone.m4a", ramp_tone(1.0, 44100), 44100)
    silent = write_silent_video(tmp_path / "silent.mp4")
    batch = {"item_id": np.array(["good", "silent", "absent"], dtype=object),
             "media_uri": np.array([str(good), str(silent), str(tmp_path / "absent.mp4")], dtype=object),
             "media_type": np.array(["audio", "video", "video"], dtype=object)}
    out = AudioDecoder({"max_seconds": 30})(batch)
    assert list(out["item_id"]) == ["good", "silent", "absent"]
    assert [len(a) for a in out["audio"]] == [16000, 0, 0]
    assert out["audio_seconds"].tolist() == [1.0, 0.0, 0.0]
    assert list(out["skipped"]) == [None, NO_AUDIO, None]
    assert out["error"][0] is None and out["error"][1] is None and "is missing" in out["error"][2]
