"""Describe video and image items with a multimodal LLM (`seerec describe`, `python -m jobs.describe`).

Ray Data: the items still to do → the frame decoding pool → an actor pool holding the model
(transformers or vLLM, `num_gpus` per actor) → descriptions stream to the driver, which merges them into
the store in bulk. Items already described by the same model with the same prompt are skipped.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

import numpy as np

from extractors.describe.describer import Describer
from extractors.describe.prompts import PromptSet
from pipeline.config import SeerecConfig
from pipeline.models import check_checkpoint, model_identity
from pipeline.runner import run_stage
from pipeline.runtime import StageSummary
from pipeline.schema import description_family
from pipeline.stage import FRAMES, FirstResult, Stage


class TokenCount:
    """Tokens generated in the run, and per second of it."""

    def __init__(self):
        self.tokens = 0

    def add(self, batch: Mapping[str, np.ndarray], elapsed_s: float) -> None:
        self.tokens += int(np.sum(batch["tokens"]))

    def extra(self, seconds: float) -> dict:
        return {"tokens_generated": self.tokens, "tokens_per_second": round(self.tokens / seconds, 2) if seconds else 0}


def generation_params(cfg: SeerecConfig) -> str:
    """The settings behind a description besides model and prompt, written as `<column>_params`."""
    d = cfg.describe
    return json.dumps({"backend": d.backend, **d.generation.model_dump(), "media": cfg.media.model_dump()},
                      sort_keys=True)


DESCRIBE = Stage(
    name="describe", section=lambda cfg: cfg.describe, model=Describer, output="description",
    model_id=lambda d: model_identity(d.model), family=lambda d: description_family(d.column),
    reads=lambda d: ["media_uri", "media_type", "title"], where=lambda cfg: cfg.describe.where,
    media_types=("video", "image"), decoder=FRAMES, settings=lambda d: {"prompt_id": PromptSet(d.prompts).ids()},
    constants=lambda cfg, d: {"params": generation_params(cfg)}, metrics=(FirstResult, TokenCount),
    check=lambda d: check_checkpoint(d.model, "describe.model", ["config.json"], test_model="qwen2-vl"),
)


def run_describe(cfg: SeerecConfig, force: bool = False) -> StageSummary:
    return run_stage(DESCRIBE, cfg, force)


# The job's own command-line flags (`seerec submit` checks them before connecting).
FLAGS = {"force": "re-describe items already described by the same model and prompt"}


def main(argv: list[str] | None = None) -> int:
    from jobs.common import job_main

    return job_main(run_describe, "Describe video and image items with a multimodal LLM.", argv, FLAGS)


if __name__ == "__main__":
    sys.exit(main())
