"""The decode pool of describe-audio: every item's sound, and for an omni model a video's frames as well."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.audio import decode_audio_batch
from pipeline.config import AudioConfig, MediaConfig, Section
from pipeline.media import decode_batch
from pipeline.schema import SKIPPED, error_values


class AudioVisualInput(Section):
    audio: AudioConfig
    # Frames too (for an omni model); None decodes sound only.
    media: MediaConfig | None = None


class AudioVisualDecoder:
    """Callable class for `map_batches`: the audio decoder's columns plus `sample_rate`, and with `media` the
    frame decoder's columns, filled for the videos whose sound decoded (the others need no frames)."""

    def __init__(self, cfg: AudioVisualInput | dict[str, Any], roots: Sequence[str] = ()):
        self.cfg = AudioVisualInput.model_validate(cfg)
        self.roots = tuple(roots)
        if self.cfg.media is not None:
            self.cfg.media = self.cfg.media.model_copy(update={"roots": list(roots)})

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = decode_audio_batch(batch, self.cfg.audio, self.roots)
        n = len(batch["item_id"])
        out["sample_rate"] = np.full(n, self.cfg.audio.sample_rate, np.int32)
        if self.cfg.media is None:
            return out
        errors, skipped = error_values(out["error"]), error_values(out[SKIPPED])
        rows = np.array([i for i in range(n) if batch["media_type"][i] == "video" and errors[i] is None
                         and skipped[i] is None], dtype=np.int64)
        frames = decode_batch({key: np.asarray(batch[key])[rows] for key in ("item_id", "media_uri", "media_type")},
                              self.cfg.media)
        out.update(frames=_scatter(frames["frames"], rows, n, np.zeros((0, 1, 1, 3), np.uint8)),
                   frame_indices=_scatter(frames["frame_indices"], rows, n, np.zeros(0, np.int64)),
                   source_fps=_fill(frames["source_fps"], rows, n, np.float32),
                   source_frames=_fill(frames["source_frames"], rows, n, np.int64))
        for row, error in zip(rows, frames["media_error"], strict=True):
            errors[row] = error
        out["error"] = errors
        return out


def _scatter(values: np.ndarray, rows: np.ndarray, n: int, empty: np.ndarray) -> np.ndarray:
    """Per-row arrays back in their rows of the whole batch; the other rows get their own empty array."""
    column = np.array([empty.copy() for _ in range(n)] + [None], dtype=object)[:n]
    for row, value in zip(rows, values, strict=True):
        column[row] = value
    return column


def _fill(values: np.ndarray, rows: np.ndarray, n: int, dtype) -> np.ndarray:
    column = np.zeros(n, dtype)
    column[rows] = values
    return column
