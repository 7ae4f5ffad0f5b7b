"""Speech to text with faster-whisper (CTranslate2), as a plain callable class over decoded audio batches.

int8 on the CPU and float16 on a GPU are CTranslate2's fast compute types; on a GPU an item's speech chunks
go through the model together (`BatchedInferencePipeline`). The VAD filter drops stretches without speech
first, which is where Whisper otherwise invents words.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import TranscribeConfig
from pipeline.models import model_identity, model_location
from pipeline.schema import error_values

WHISPER_MARKER = "model.bin"  # the weights file of a CTranslate2 model folder


def transcribe_model_id(cfg: TranscribeConfig) -> str:
    """Provenance: the model (one id for every spelling of a folder) and the settings that change the text."""
    return f"faster-whisper:{model_identity(cfg.model)}:{cfg.task}:{cfg.language or 'detect'}"


def whisper_location(cfg: TranscribeConfig) -> str:
    """The model's folder or name; raises one sentence for a missing folder (called on the driver first)."""
    return model_location(cfg.model, WHISPER_MARKER, "transcribe.model")


def whisper_settings(cfg: TranscribeConfig) -> tuple[str, str, bool]:
    """(device, compute type, batched) with each `auto` resolved for this machine (the benchmark's bare loop
    takes the same)."""
    import ctranslate2

    device = cfg.device
    if device == "auto":
        # CTranslate2's own device count: importing torch only to ask would add seconds to every actor's start.
        device = "cuda" if ctranslate2.get_cuda_device_count() else "cpu"
    compute = cfg.compute_type
    if compute == "auto":
        compute = "float16" if device == "cuda" else "int8"
    return device, compute, cfg.batched if cfg.batched is not None else device == "cuda"


class Transcriber:
    """Transcribes each decoded item; returns the text, its language and the language's probability."""

    def __init__(self, cfg: TranscribeConfig | dict):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.cfg = TranscribeConfig.model_validate(cfg)
        device, compute, batched = whisper_settings(self.cfg)
        self.model = WhisperModel(whisper_location(self.cfg), device=device, compute_type=compute,
                                  cpu_threads=max(1, int(self.cfg.num_cpus)))
        self.pipeline = BatchedInferencePipeline(self.model) if batched else None

    def transcribe(self, audio: np.ndarray) -> tuple[str, str, float]:
        """(text, language, probability) of one item's 16 kHz mono samples."""
        options = {"language": self.cfg.language, "task": self.cfg.task, "beam_size": self.cfg.beam_size,
                   "temperature": self.cfg.temperature, "vad_filter": self.cfg.vad_filter}
        if self.pipeline is not None:
            segments, info = self.pipeline.transcribe(audio, batch_size=self.cfg.chunks_per_batch, **options)
        else:
            segments, info = self.model.transcribe(audio, **options)
        text = " ".join(segment.text.strip() for segment in segments).strip()  # segments decode lazily, here
        return text, info.language, float(info.language_probability)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["item_id"])
        errors, skipped = error_values(batch["error"]), error_values(batch["skipped"])
        texts = np.full(n, None, dtype=object)
        languages = np.full(n, None, dtype=object)
        probabilities = np.full(n, np.nan, np.float32)
        for i in range(n):
            if errors[i] is not None or skipped[i] is not None:
                continue
            try:
                texts[i], languages[i], probabilities[i] = self.transcribe(batch["audio"][i])
            except Exception as exc:  # one item's failure is its error record, not the batch's
                errors[i] = f"transcription failed: {type(exc).__name__}: {exc}"
        return {"item_id": batch["item_id"], "transcript": texts, "language": languages,
                "language_probability": probabilities, "audio_seconds": batch["audio_seconds"],
                "error": errors, "skipped": skipped}
