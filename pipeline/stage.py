"""A Ray Data stage, declared once: what it reads, what counts as done, its model and pool, what it writes.

`pipeline.runner.run_stage` turns a declaration into a job (pending items → Ray dataset → decode pool →
model actor pool → driver writes → summary). A stage's logic stays in its model class, a plain callable
class over numpy batches that works without Ray; the declaration only wires it to the store and config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from pipeline.audio import AudioDecoder
from pipeline.config import Section, SeerecConfig, StageSection
from pipeline.media import FrameDecoder
from pipeline.media_roots import MediaRoots
from pipeline.schema import Family


class StageMetric(Protocol):
    """A stage's own extra in its summary, fed every result batch as it reaches the driver."""

    def add(self, batch: Mapping[str, np.ndarray], elapsed_s: float) -> None: ...

    def extra(self, seconds: float) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Decoder:
    """A CPU actor pool ahead of the model that turns each item's media into arrays (frames, later audio).

    `model` is a callable class over numpy batches, built once per actor with `cfg=<section as a dict>` and
    `roots=<the media roots it may open>` (`decoder_roots`: every decoder opens media, so every one is confined).
    """

    model: type
    section: Callable[[SeerecConfig], Section]


def decoder_roots(cfg: SeerecConfig) -> list[str]:
    """The folders and URI prefixes a decoder may open: `media.roots`, or by default the catalog's own folder
    when the config names one (as ingest allows), else none (local files only, never a remote URI)."""
    if cfg.media.roots or cfg.ingest.path is None:
        return list(cfg.media.roots)
    return list(MediaRoots.for_catalog((), cfg.ingest.path).roots)


FRAMES = Decoder(FrameDecoder, lambda cfg: cfg.media)
# Sound at the `audio` section's rate (16 kHz, as speech models take it).
AUDIO = Decoder(AudioDecoder, lambda cfg: cfg.audio)


@dataclass(frozen=True)
class Stage:
    """Everything the runner needs to know about a stage; the callables take the config or the stage's section,
    because settings such as the column name or the model are chosen in the config."""

    # Name in logs, progress and the summary, e.g. "embed-text".
    name: str
    # The stage's config section: model settings plus its pool (items_per_batch, concurrency, num_gpus, num_cpus).
    section: Callable[[SeerecConfig], StageSection]
    # Callable class over numpy batches, built once per actor with `cfg=<section as a dict>`. It returns
    # item_id, error (str or None per item), the value under `output`, and extras keyed by family suffix.
    model: type
    # The result column holding the family's value, e.g. "vector".
    output: str
    # The id written as provenance; items done by this id (and `settings`) are skipped on the next run.
    # Build it with `pipeline.models.model_identity`, so every spelling of one model gives one id.
    model_id: Callable[[StageSection], str]
    # The column family it writes (a vector family may leave its width to the first batch).
    family: Callable[[StageSection], Family]
    # Store columns the model (or `prepare`) reads besides item_id.
    reads: Callable[[StageSection], Sequence[str]]
    # The user's conditions on which items to do (a list of `pipeline.filters` conditions).
    where: Callable[[SeerecConfig], Sequence[str]] = lambda cfg: ()
    # Only items of these media types, when set.
    media_types: tuple[str, ...] = ()
    # Per family extra (by suffix), the values a done item must hold to count as done, e.g. the prompt ids.
    settings: Callable[[StageSection], dict[str, Sequence[str]]] = lambda section: {}
    # Turns the pending rows into the model's input on the driver (render texts, sort by length).
    prepare: Callable[[pa.Table, StageSection], pa.Table] | None = None
    # A decode pool ahead of the model (its size is the section's decode_concurrency).
    decoder: Decoder | None = None
    # Family extras (by suffix) that are the same on every row of a run, e.g. the template as `source`.
    constants: Callable[[SeerecConfig, StageSection], dict[str, str]] = lambda cfg, section: {}
    # Extras of the summary, each built fresh for a run and fed every result batch.
    metrics: tuple[type[StageMetric], ...] = ()
    # Raises a `SeerecError` on the driver, before Ray starts, when the section's model cannot be loaded.
    check: Callable[[StageSection], None] = lambda section: None
    # A recorded model id as `model_id` writes it today, so that items an earlier seerec recorded in another
    # spelling count as done.
    recorded_as: Callable[[str], str] = lambda recorded: recorded


class FirstResult:
    """Start-up cost: seconds until the first results reached the driver (workers, model load, first batch)."""

    def __init__(self):
        self.seconds: float | None = None
        self.items = 0

    def add(self, batch: Mapping[str, np.ndarray], elapsed_s: float) -> None:
        if self.seconds is None:
            self.seconds, self.items = round(elapsed_s, 2), len(batch["item_id"])

    def extra(self, seconds: float) -> dict[str, Any]:
        return {"first_result_s": self.seconds, "first_result_items": self.items} if self.seconds is not None else {}


class AudioSeconds:
    """Seconds of sound processed in the run, and per wall second (the throughput of audio stages)."""

    def __init__(self):
        self.seconds = 0.0

    def add(self, batch: Mapping[str, np.ndarray], elapsed_s: float) -> None:
        self.seconds += float(np.sum(batch["audio_seconds"]))

    def extra(self, seconds: float) -> dict[str, Any]:
        return {"audio_seconds": round(self.seconds, 2),
                "audio_seconds_per_second": round(self.seconds / seconds, 3) if seconds else 0}
