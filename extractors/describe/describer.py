"""The describe stage over one batch of decoded items, as a Ray Data actor (`map_batches`)."""

from __future__ import annotations

import logging

import numpy as np

from extractors.describe.backends import DescribeRequest, Generation, make_backend
from extractors.describe.prompts import PromptSet
from pipeline.config import DescribeConfig
from pipeline.schema import error_values

log = logging.getLogger(__name__)


class Describer:
    """Prompts the model for every item that decoded; a failing item becomes an error, not a failed batch."""

    def __init__(self, cfg: DescribeConfig | dict):
        self.cfg = DescribeConfig.model_validate(cfg)
        self.prompts = PromptSet(self.cfg.prompts)
        self.backend = make_backend(self.cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["item_id"])
        errors = error_values(batch["media_error"])
        texts = np.full(n, None, dtype=object)
        prompt_ids = np.array([self.prompts.prompt_id(t) if t in ("video", "image") else None
                               for t in batch["media_type"]], dtype=object)
        prompt_tokens = np.zeros(n, np.int32)
        tokens = np.zeros(n, np.int32)
        todo = [i for i in range(n) if errors[i] is None]
        requests = [self._request(batch, i) for i in todo]
        for i, result in zip(todo, self._generate(requests), strict=True):
            if isinstance(result, Exception):
                errors[i] = f"model failed: {type(result).__name__}: {result}"
            elif not result.text:
                errors[i] = "the model generated no text"
            else:
                texts[i], prompt_tokens[i], tokens[i] = result.text, result.prompt_tokens, result.generated_tokens
        return {"item_id": batch["item_id"], "description": texts, "error": errors, "prompt_id": prompt_ids,
                "prompt_tokens": prompt_tokens, "tokens": tokens}

    def _request(self, batch: dict[str, np.ndarray], i: int) -> DescribeRequest:
        title = batch["title"][i] if "title" in batch else None
        return DescribeRequest(
            media_type=str(batch["media_type"][i]),
            prompt=self.prompts.render(str(batch["media_type"][i]), title if isinstance(title, str) else None),
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
