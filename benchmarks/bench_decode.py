"""Frame decoding: seerec's `decode_batch` (what the Ray stage runs) against a bare decord loop.

Both sides decode the same real MicroLens videos to the same frames (default MediaConfig: 8 uniform frames,
longer side 448). The baseline is given each video's output size upfront; seerec also probes the header and
counts packets (its truncation check) and catches errors per item, and this benchmark measures that cost.
Videos alternate between the two sides, so a neighbour's load on a shared machine hits both alike.

    python benchmarks/bench_decode.py --repeat 3 --out benchmarks/results/decode.json
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import av
import numpy as np
from common import REPO, timed, write_result

from pipeline import media
from pipeline.config import MediaConfig

VIDEOS = REPO.parent / "shared" / "data" / "microlens-sample" / "videos"
NAMES = ["1002", "10034", "10040"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="decode the list of 3 videos this many times")
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    args = parser.parse_args()

    import decord  # the baseline needs it even where seerec would fall back to PyAV

    paths = [VIDEOS / f"{name}.mp4" for name in NAMES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"benchmark videos are absent: {', '.join(missing)}")
    cfg = MediaConfig()
    sizes = {p: _output_size(p, cfg) for p in paths}

    def baseline(path: Path) -> np.ndarray:
        width, height = sizes[path]
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=width, height=height)
        return reader.get_batch(media.frame_indices(len(reader), reader.get_avg_fps(), cfg)).asnumpy()

    def seerec(path: Path) -> np.ndarray:
        batch = {"item_id": np.array([path.stem]), "media_uri": np.array([str(path)])}
        out = media.decode_batch({**batch, "media_type": np.array(["video"])}, cfg)
        if out["media_error"][0] is not None:
            raise SystemExit(f"seerec failed on {path}: {out['media_error'][0]}")
        return out["frames"][0]

    for path in paths:  # warm-up: page cache, codec and library initialisation
        assert baseline(path).shape == seerec(path).shape

    sides = {"baseline": baseline, "seerec": seerec}
    seconds = dict.fromkeys(sides, 0.0)
    for i, path in enumerate(paths * args.repeat):
        for side in sorted(sides, reverse=i % 2 == 1):  # alternate which side goes first
            seconds[side] += timed(partial(sides[side], path))[0]

    n = len(paths) * args.repeat
    result = {
        "benchmark": "decode",
        "seerec_videos_per_s": round(n / seconds["seerec"], 3),
        "baseline_videos_per_s": round(n / seconds["baseline"], 3),
        "ratio": round(seconds["baseline"] / seconds["seerec"], 3),  # seerec videos/s over baseline videos/s
        "settings": {
            "videos": [p.name for p in paths],
            "repeat": args.repeat,
            "videos_decoded_per_side": n,
            "media": cfg.model_dump(),
            "seerec_backend": media.VIDEO_BACKEND,
            "decord": decord.__version__,
            "av": av.__version__,
            "baseline": "decord.VideoReader(width, height) + get_batch(same indices).asnumpy(), sizes known",
        },
    }
    print(f"decoded {n} videos per side ({cfg.num_frames} frames, max_side {cfg.max_side})")
    print(f"  seerec decode_batch : {result['seerec_videos_per_s']:.2f} videos/s")
    print(f"  bare decord loop    : {result['baseline_videos_per_s']:.2f} videos/s")
    print(f"  ratio seerec/baseline: {result['ratio']:.3f}")
    if args.out:
        write_result(args.out, result)
        print(f"wrote {args.out}")


def _output_size(path: Path, cfg: MediaConfig) -> tuple[int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        scale = min(1.0, cfg.max_side / max(stream.width, stream.height))
        return round(stream.width * scale), round(stream.height * scale)


if __name__ == "__main__":
    main()
