"""Audio decoding: seerec's `decode_audio_batch` (what the audio stages' decode pool runs) against a bare PyAV loop.

Both sides turn the same files into the same 16 kHz mono float32 samples: AAC clips cut from the real MicroLens
sample videos plus the three videos themselves (AAC at 44.1 kHz, so both resample). The baseline opens, decodes
and resamples with `av.AudioResampler` and nothing else; seerec also checks the file size, reads the header
duration, applies the `max_seconds` cap, checks for truncation and catches errors per item. Files alternate
between the sides, so a neighbour's load on a shared machine hits both alike.

    python benchmarks/bench_audio_decode.py --repeat 3 --out benchmarks/results/audio_decode.json
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import av
import numpy as np
from audio_clips import make_clips, sample_videos
from common import timed, write_result

from pipeline.audio import decode_audio_batch
from pipeline.config import AudioConfig


def bare_pyav(path: Path, rate: int) -> np.ndarray:
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        frames = container.decode(audio=0)
        chunks = [out.to_ndarray().reshape(-1) for frame in frames for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="decode the list of files this many times")
    parser.add_argument("--clip-seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    args = parser.parse_args()
    cfg = AudioConfig()

    with tempfile.TemporaryDirectory() as folder:
        paths = [*make_clips(Path(folder), args.clip_seconds, args.clip_seconds / 2), *sample_videos()]

        def seerec(path: Path) -> np.ndarray:
            kind = "video" if path.suffix == ".mp4" else "audio"
            batch = {"item_id": np.array([path.stem]), "media_uri": np.array([str(path)]),
                     "media_type": np.array([kind])}
            out = decode_audio_batch(batch, cfg)
            if out["error"][0] is not None:
                raise SystemExit(f"seerec failed on {path}: {out['error'][0]}")
            return out["audio"][0]

        seconds_of_sound = 0.0
        for path in paths:  # warm-up (page cache, codecs) and a check that both sides give the same samples
            ours, theirs = seerec(path), bare_pyav(path, cfg.sample_rate)
            assert abs(len(ours) - len(theirs)) <= cfg.sample_rate // 10, (path, len(ours), len(theirs))
            seconds_of_sound += len(ours) / cfg.sample_rate

        sides = {"baseline": partial(bare_pyav, rate=cfg.sample_rate), "seerec": seerec}
        seconds = dict.fromkeys(sides, 0.0)
        for i, path in enumerate(paths * args.repeat):
            for side in sorted(sides, reverse=i % 2 == 1):  # alternate which side goes first
                seconds[side] += timed(partial(sides[side], path))[0]

    sound = seconds_of_sound * args.repeat
    result = {
        "benchmark": "audio_decode",
        "seerec_audio_seconds_per_s": round(sound / seconds["seerec"], 1),
        "baseline_audio_seconds_per_s": round(sound / seconds["baseline"], 1),
        "ratio": round(seconds["baseline"] / seconds["seerec"], 3),  # seerec throughput over baseline throughput
        "settings": {"files": len(paths), "clip_seconds": args.clip_seconds, "repeat": args.repeat,
                     "audio_seconds_per_side": round(sound, 1), "audio": cfg.model_dump(), "av": av.__version__,
                     "baseline": "av.open + decode(audio=0) + AudioResampler(flt, mono, 16 kHz) + concatenate"},
    }
    print(f"decoded {len(paths) * args.repeat} files, {sound:.0f} s of sound, per side")
    print(f"  seerec decode_audio_batch: {result['seerec_audio_seconds_per_s']:.0f} audio s/s")
    print(f"  bare PyAV loop           : {result['baseline_audio_seconds_per_s']:.0f} audio s/s")
    print(f"  ratio seerec/baseline    : {result['ratio']:.3f}")
    if args.out:
        write_result(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
