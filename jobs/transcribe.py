"""Transcribe the speech of video and audio items (`seerec transcribe`, `python -m jobs.transcribe`).

Ray Data: the items still to do → the audio decoding pool → a faster-whisper actor pool → transcripts stream
to the driver, which merges them into the store in bulk. Items already transcribed by the same model and
settings are skipped, and so are items without an audio stream (recorded once as `<column>_skipped`).
"""

from __future__ import annotations

import sys

from extractors.transcribe import Transcriber, transcribe_model_id, whisper_location
from pipeline.audio import AUDIO_MEDIA_TYPES
from pipeline.config import SeerecConfig
from pipeline.runner import run_stage
from pipeline.runtime import StageSummary
from pipeline.schema import transcript_family
from pipeline.stage import AUDIO, AudioSeconds, FirstResult, Stage

TRANSCRIBE = Stage(
    name="transcribe", section=lambda cfg: cfg.transcribe, model=Transcriber, output="transcript",
    model_id=transcribe_model_id, family=lambda t: transcript_family(t.column),
    reads=lambda t: ["media_uri", "media_type"], where=lambda cfg: cfg.transcribe.where,
    media_types=AUDIO_MEDIA_TYPES, decoder=AUDIO,
    metrics=(FirstResult, AudioSeconds), check=whisper_location,
)


def run_transcribe(cfg: SeerecConfig, force: bool = False) -> StageSummary:
    return run_stage(TRANSCRIBE, cfg, force)


FLAGS = {"force": "re-transcribe items already transcribed by the same model and settings"}


def main(argv: list[str] | None = None) -> int:
    from jobs.common import job_main

    return job_main(run_transcribe, "Transcribe the speech of video and audio items.", argv, FLAGS)


if __name__ == "__main__":
    sys.exit(main())
