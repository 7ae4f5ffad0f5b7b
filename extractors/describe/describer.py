"""The describe stages over one batch of decoded items, as Ray Data actors (`map_batches`).

`Describer` asks about what items show (frames), `AudioDescriber` about what they sound like (sound, or
a video's frames and sound together for an omni model). Both share the batching and the error handling.
"""

from __future__ import annotations

import logging

import numpy as np

from extractors.describe.backends import DescribeRequest, Generation, make_backend
from extractors.describe.prompts import PromptSet
from pipeline.config import AudioDescribeConfig, DescribeConfig, DescribeSettings
from pipeline.schema import SKIPPED, error_values

log = logging.getLogger(__name__)


class Describer:
    """Prompts the model for every item that decoded; a failing item becomes an error, not a failed batch."""

    config_class: type[DescribeSettings] = DescribeConfig

    def __init__(self, cfg: DescribeSettings | dict):
        self.cfg = self.config_class.model_validate(cfg)
        self.prompts = PromptSet(self.cfg.prompts)
        self.backend = make_backend(self.cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["item_id"])
        errors, skipped = self._decoded(batch)
        texts = np.full(n, None, dtype=object)
        kinds = [None if skipped[i] else self._prompt_kind(batch, i) for i in range(n)]
        prompt_ids = np.array([self.prompts.prompt_id(k) if k else None for k in kinds], dtype=object)
        prompt_tokens = np.zeros(n, np.int32)
        tokens = np.zeros(n, np.int32)
        todo = [i for i in range(n) if errors[i] is None and skipped[i] is None]
        requests = [self._request(batch, i, kinds[i]) for i in todo]
        for i, result in zip(todo, self._generate(requests), strict=True):
            if isinstance(result, Exception):
                errors[i] = f"model failed: {type(result).__name__}: {result}"
            elif not result.text:
                errors[i] = "the model generated no text"
            else:
                texts[i], prompt_tokens[i], tokens[i] = result.text, result.prompt_tokens, result.generated_tokens
        return {"item_id": batch["item_id"], "description": texts, "error": errors, "prompt_id": prompt_ids,
                "prompt_tokens": prompt_tokens, "tokens": tokens, **self._outcomes(skipped)}

    def _decoded(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per item: its decoding error, and why it has nothing to describe (None when it has)."""
        return error_values(batch["media_error"]), np.full(len(batch["item_id"]), None, dtype=object)

    def _outcomes(self, skipped: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def _prompt_kind(self, batch: dict[str, np.ndarray], i: int) -> str | None:
        media_type = str(batch["media_type"][i])
        return media_type if media_type in self.prompts.kinds else None

    def _prompt(self, batch: dict[str, np.ndarray], i: int, kind: str) -> str:
        title = batch["title"][i] if "title" in batch else None
        return self.prompts.render(kind, title if isinstance(title, str) else None)

    def _request(self, batch: dict[str, np.ndarray], i: int, kind: str) -> DescribeRequest:
        return DescribeRequest(
            media_type=str(batch["media_type"][i]), prompt=self._prompt(batch, i, kind),
            frames=batch["frames"][i], fps=float(batch["source_fps"][i]),
            frame_indices=np.asarray(batch["frame_indices"][i]), total_frames=int(batch["source_frames"][i]),
        )

    def _generate(self, requests: list[DescribeRequest]) -> list[Generation | Exception]:
        """The whole batch at once; if that fails, item by item, so only the culprit gets the error."""
        if not requests:
            return []
        try:
            return self.backend.generate(requests)
        except Exception as exc:
            if len(requests) == 1:
                return [exc]
            log.warning("batch of %d failed (%s); retrying item by item", len(requests), exc)
        return [self._generate([r])[0] for r in requests]


class AudioDescriber(Describer):
    """Describes what items sound like. An item without sound is skipped (its reason recorded), not failed.

    modality audio: the sound alone. omni: a video's frames and sound in one prompt; an audio-only item
    gets the audio prompt. Batches come from `AudioVisualDecoder`.
    """

    config_class = AudioDescribeConfig

    def _decoded(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return error_values(batch["error"]), error_values(batch[SKIPPED])

    def _outcomes(self, skipped: np.ndarray) -> dict[str, np.ndarray]:
        return {SKIPPED: skipped}

    def _prompt_kind(self, batch: dict[str, np.ndarray], i: int) -> str | None:
        with_frames = self.cfg.modality == "omni" and str(batch["media_type"][i]) == "video"
        return "omni" if with_frames else "audio"

    def _request(self, batch: dict[str, np.ndarray], i: int, kind: str) -> DescribeRequest:
        sound = {"audio": np.asarray(batch["audio"][i], np.float32), "sample_rate": int(batch["sample_rate"][i])}
        if kind == "audio":
            return DescribeRequest(media_type="audio", prompt=self._prompt(batch, i, kind), frames=None, **sound)
        return DescribeRequest(
            media_type="video", prompt=self._prompt(batch, i, kind), frames=batch["frames"][i],
            fps=float(batch["source_fps"][i]), frame_indices=np.asarray(batch["frame_indices"][i]),
            total_frames=int(batch["source_frames"][i]), **sound,
        )
