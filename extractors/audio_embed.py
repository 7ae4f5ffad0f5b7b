"""CLAP audio embeddings (transformers `ClapModel`), as a plain callable class over decoded audio batches.

CLAP hears fixed windows (10 s for LAION's checkpoints). Its feature extractor would crop a longer input at
random, so an item is instead cut into consecutive windows, each embedded, and the unit vectors averaged:
the same item always gets the same vector, as a video's frames do in `ClipEmbedder`.
"""

from __future__ import annotations

import numpy as np
import torch

from extractors.embed import embed_valid, mean_of_unit_vectors, resolve_device
from pipeline.config import AudioConfig, AudioEmbedConfig
from pipeline.models import model_identity, model_location
from pipeline.schema import error_values

CLAP_MARKER = "config.json"
# A last window shorter than this is dropped when the item has longer ones (it would be mostly repeat-padding).
_MIN_TAIL_S = 1.0


def clap_model_id(cfg: AudioEmbedConfig) -> str:
    """Provenance: one id for every spelling of a checkpoint folder."""
    return f"transformers-clap:{model_identity(cfg.model)}"


def clap_location(cfg: AudioEmbedConfig) -> str:
    """The checkpoint's folder or Hub id; raises one sentence for a missing folder (called on the driver first)."""
    return model_location(cfg.model, CLAP_MARKER, "embed.audio.model", "clap")


def audio_source(audio: AudioConfig) -> str:
    """Which sound was embedded, e.g. `first:120s` or `spread:120s/4`, written as `<column>_source`."""
    pieces = f"/{audio.spread_segments}" if audio.spread == "spread" else ""
    return f"{audio.spread}:{audio.max_seconds:g}s{pieces}"


class ClapAudioEmbedder:
    """Embeds decoded sound: windows through CLAP's audio tower, then a per-item mean of unit vectors."""

    def __init__(self, cfg: AudioEmbedConfig | dict):
        from transformers import ClapModel, ClapProcessor

        self.cfg = AudioEmbedConfig.model_validate(cfg)
        self.device = resolve_device(self.cfg.device, self.cfg.num_cpus)
        location = clap_location(self.cfg)
        self.processor = ClapProcessor.from_pretrained(location)
        self.model = ClapModel.from_pretrained(location).to(self.device).eval()
        features = self.processor.feature_extractor
        if features.sampling_rate != self.cfg.sample_rate:
            raise ValueError(f"{self.cfg.model} takes {features.sampling_rate} Hz sound; "
                             f"set embed.audio.sample_rate={features.sampling_rate}")
        self.window = int(features.nb_max_samples)
        self.dim = int(self.model.config.projection_dim)

    def windows(self, audio: np.ndarray) -> list[np.ndarray]:
        pieces = [audio[o:o + self.window] for o in range(0, len(audio), self.window)]
        if len(pieces) > 1 and len(pieces[-1]) < _MIN_TAIL_S * self.cfg.sample_rate:
            pieces.pop()
        return pieces

    @torch.inference_mode()
    def embed_items(self, items: list[np.ndarray]) -> np.ndarray:
        windows = [self.windows(audio) for audio in items]
        flat = [w for item in windows for w in item]
        vectors = []
        for start in range(0, len(flat), self.cfg.windows_per_batch):
            inputs = self.processor(audio=flat[start:start + self.cfg.windows_per_batch],
                                    sampling_rate=self.cfg.sample_rate, return_tensors="pt").to(self.device)
            vectors.append(self.model.get_audio_features(**inputs).pooler_output.float().cpu())
        return mean_of_unit_vectors(torch.cat(vectors), [len(w) for w in windows])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["item_id"])
        vectors = np.zeros((n, self.dim), np.float32)
        errors, skipped = error_values(batch["error"]), error_values(batch["skipped"])
        ok = [i for i in range(n) if errors[i] is None and skipped[i] is None and len(batch["audio"][i])]
        for i in range(n):
            if i not in ok and skipped[i] is None:
                errors[i] = errors[i] or "no sound to embed"
        embed_valid(self.embed_items, [batch["audio"][i] for i in ok], ok, vectors, errors, "audio")
        return {"item_id": batch["item_id"], "vector": vectors, "audio_seconds": batch["audio_seconds"],
                "error": errors, "skipped": skipped}
