"""Transcribe the speech of video and audio items (`seerec transcribe`, `python -m jobs.transcribe`).

Ray Data: the items still to do → the audio decoding pool → a faster-whisper actor pool → transcripts stream
to the driver, which merges them into the store in bulk. Items already transcribed by the same model and
settings are skipped, and so are items without an audio stream (recorded once as `<column>_skipped`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np

from extractors.transcribe import Transcriber, transcribe_model_id, whisper_location
from pipeline.audio import AUDIO_MEDIA_TYPES, AudioDecoder
from pipeline.config import SeerecConfig
from pipeline.runner import run_stage
from pipeline.runtime import StageSummary
from pipeline.schema import transcript_family
from pipeline.stage import Decoder, FirstResult, Stage


class AudioSeconds:
    """Seconds of sound processed in the run, and per wall second (the throughput of audio stages)."""

    def __init__(self):
        self.seconds = 0.0

    def add(self, batch: Mapping[str, np.ndarray], elapsed_s: float) -> None:
        self.seconds += float(np.sum(batch["audio_seconds"]))

    def extra(self, seconds: float) -> dict:
        return {"audio_seconds": round(self.seconds, 2),
                "audio_seconds_per_second": round(self.seconds / seconds, 3) if seconds else 0}


TRANSCRIBE = Stage(
    name="transcribe", section=lambda cfg: cfg.transcribe, model=Transcriber, output="transcript",
    model_id=transcribe_model_id, family=lambda t: transcript_family(t.column),
    reads=lambda t: ["media_uri", "media_type"], where=lambda cfg: cfg.transcribe.where,
    media_types=AUDIO_MEDIA_TYPES, decoder=Decoder(AudioDecoder, lambda cfg: cfg.audio),
    metrics=(FirstResult, AudioSeconds),
)


def run_transcribe(cfg: SeerecConfig, force: bool = False) -> StageSummary:
    whisper_location(cfg.transcribe)  # a missing model folder is one sentence, before Ray starts
    return run_stage(TRANSCRIBE, cfg, force)


def main(argv: list[str] | None = None) -> int:
    from jobs.common import job_main

    return job_main(run_transcribe, "Transcribe the speech of video and audio items.", argv,
                    {"force": "re-transcribe items already transcribed by the same model and settings"})


if __name__ == "__main__":
    sys.exit(main())
