"""Describe what video and audio items sound like with an audio LLM (`seerec describe-audio`,
`python -m jobs.describe_audio`).

Ray Data: the items still to do → the sound decoding pool (frames too, for an omni model) → an actor pool
holding the model (transformers or vLLM) → descriptions stream to the driver, which merges them into the
`audio_description` family in bulk. A video without sound is recorded as skipped (`no audio stream`) and
not retried; items already described by the same model with the same prompt are skipped too.
"""

from __future__ import annotations

import json
import sys

from extractors.describe.describer import AudioDescriber
from extractors.describe.prompts import PromptSet
from extractors.describe.sound import AudioVisualDecoder, AudioVisualInput
from jobs.describe import TokenCount
from pipeline.audio import AUDIO_MEDIA_TYPES
from pipeline.config import SeerecConfig
from pipeline.models import check_checkpoint, model_identity
from pipeline.runner import run_stage
from pipeline.runtime import StageSummary
from pipeline.schema import audio_description_family
from pipeline.stage import Decoder, FirstResult, Stage


def decoder_input(cfg: SeerecConfig) -> AudioVisualInput:
    omni = cfg.describe_audio.modality == "omni"
    return AudioVisualInput(audio=cfg.audio, media=cfg.media if omni else None)


def audio_generation_params(cfg: SeerecConfig) -> str:
    """The settings behind a description besides model and prompt, written as `<column>_params`."""
    d = cfg.describe_audio
    media = {"media": cfg.media.model_dump()} if d.modality == "omni" else {}
    return json.dumps({"backend": d.backend, "modality": d.modality, **d.generation.model_dump(),
                       "audio": cfg.audio.model_dump(), **media}, sort_keys=True)


DESCRIBE_AUDIO = Stage(
    name="describe-audio", section=lambda cfg: cfg.describe_audio, model=AudioDescriber, output="description",
    model_id=lambda d: model_identity(d.model), family=lambda d: audio_description_family(d.column),
    reads=lambda d: ["media_uri", "media_type", "title"], where=lambda cfg: cfg.describe_audio.where,
    media_types=AUDIO_MEDIA_TYPES, decoder=Decoder(AudioVisualDecoder, decoder_input),
    settings=lambda d: {"prompt_id": PromptSet(d.prompts).ids()},
    constants=lambda cfg, d: {"params": audio_generation_params(cfg)}, metrics=(FirstResult, TokenCount),
    check=lambda d: check_checkpoint(d.model, "describe_audio.model", ["config.json"],
                                     test_model="qwen2.5-omni" if d.modality == "omni" else "qwen2-audio"),
)


def run_describe_audio(cfg: SeerecConfig, force: bool = False) -> StageSummary:
    return run_stage(DESCRIBE_AUDIO, cfg, force)


FLAGS = {"force": "re-describe items already described by the same model and prompt"}


def main(argv: list[str] | None = None) -> int:
    from jobs.common import job_main

    return job_main(run_describe_audio, "Describe what video and audio items sound like with an audio LLM.", argv,
                    FLAGS)


if __name__ == "__main__":
    sys.exit(main())
