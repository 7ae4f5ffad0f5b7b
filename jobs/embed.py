"""Embed items into vector columns with Ray Data (`seerec embed`, `python -m jobs.embed`).

Text: the configured template rendered per item, then a sentence-transformers actor pool.
Images and videos: the frame decoding pool, then an open_clip actor pool (frames mean-pooled per video).
Sound of videos and audio items (off by default): the audio decoding pool, then a CLAP actor pool.
Each writes its vector family, skipping items already embedded by the same model.
"""

from __future__ import annotations

import sys

from extractors.audio_embed import ClapAudioEmbedder, audio_source, clap_location, clap_model_id
from extractors.embed import (
    ClipEmbedder,
    TextEmbedder,
    check_clip_model,
    check_text_model,
    clip_model_id,
    recorded_text_id,
    render_texts,
    template_fields,
    text_model_id,
)
from pipeline.audio import AUDIO_MEDIA_TYPES, AudioDecoder
from pipeline.config import MediaConfig, SeerecConfig
from pipeline.runner import run_stages
from pipeline.runtime import StageSummary
from pipeline.schema import vector_family
from pipeline.stage import FRAMES, AudioSeconds, Decoder, Stage

EMBED_TEXT = Stage(
    name="embed-text", section=lambda cfg: cfg.embed.text, model=TextEmbedder, output="vector",
    model_id=text_model_id, family=lambda text: vector_family(text.column, skippable=True),
    reads=lambda text: template_fields(text.template), where=lambda cfg: cfg.embed.where,
    prepare=render_texts, constants=lambda cfg, text: {"source": text.template}, check=check_text_model,
    recorded_as=recorded_text_id,
)

EMBED_MEDIA = Stage(
    name="embed-media", section=lambda cfg: cfg.embed.image, model=ClipEmbedder, output="vector",
    model_id=clip_model_id, family=lambda image: vector_family(image.column),
    reads=lambda image: ["media_uri", "media_type"], where=lambda cfg: cfg.embed.where,
    media_types=("video", "image"), decoder=FRAMES, constants=lambda cfg, image: {"source": frame_source(cfg.media)},
    check=check_clip_model,
)

# The `audio` section's cap and spread, decoded at the rate the CLAP checkpoint takes.
CLAP_SOUND = Decoder(AudioDecoder,
                     lambda cfg: cfg.audio.model_copy(update={"sample_rate": cfg.embed.audio.sample_rate}))

EMBED_AUDIO = Stage(
    name="embed-audio", section=lambda cfg: cfg.embed.audio, model=ClapAudioEmbedder, output="vector",
    model_id=clap_model_id, family=lambda audio: vector_family(audio.column, skippable=True),
    reads=lambda audio: ["media_uri", "media_type"], where=lambda cfg: cfg.embed.where,
    media_types=AUDIO_MEDIA_TYPES, decoder=CLAP_SOUND, constants=lambda cfg, audio: {"source": audio_source(cfg.audio)},
    metrics=(AudioSeconds,), check=clap_location,
)


def frame_source(media: MediaConfig) -> str:
    """Which frames were embedded, e.g. `uniform:8` or `fps:1.0`, written as `<column>_source`."""
    return f"{media.sampling}:{media.num_frames if media.sampling == 'uniform' else media.fps}"


def run_embed(cfg: SeerecConfig, force: bool = False) -> list[StageSummary]:
    enabled = [(cfg.embed.text.enabled, EMBED_TEXT), (cfg.embed.image.enabled, EMBED_MEDIA),
               (cfg.embed.audio.enabled, EMBED_AUDIO)]
    return run_stages([stage for on, stage in enabled if on], cfg, force)


# The job's own command-line flags (`seerec submit` checks them before connecting).
FLAGS = {"force": "re-embed items already embedded by the same model"}


def main(argv: list[str] | None = None) -> int:
    from jobs.common import job_main

    return job_main(run_embed, "Embed item text and media into the seerec item store.", argv, FLAGS)


if __name__ == "__main__":
    sys.exit(main())
