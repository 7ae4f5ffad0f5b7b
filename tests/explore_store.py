"""A small real store for the explorer tests: the demo's synthetic catalog ingested, titles embedded with the
real MiniLM through the embed stage's own callable, hostile HTML in one title and one description, a failed
item, transcripts and audio descriptions of the videos (one silent, one hostile), semantic IDs from the real
quantize stage, media outside the roots, a compared trio of recommenders and a two-cell ablation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from extractors.describe.prompts import PromptSet
from extractors.embed import TextEmbedder, render_texts, text_model_id
from extractors.transcribe import transcribe_model_id
from jobs.ablate import make_semantic_ids, plan_ablation, write_outputs
from jobs.describe_audio import audio_generation_params
from jobs.ingest import run_ingest
from jobs.quantize import run_quantize
from jobs.synthetic import make_catalog
from pipeline.audio import NO_AUDIO
from pipeline.config import SeerecConfig, validate_config
from pipeline.models import model_identity
from pipeline.schema import audio_description_family, description_family, transcript_family, vector_family
from pipeline.store import ItemStore
from recommenders import ablation as ab

SCRIPT_TITLE = "<script>window.__pwned = 1</script>"
ATTRIBUTE_TITLE = '"><img src=x onerror="window.__pwned = 2">'
HOSTILE_DESCRIPTION = '<script>window.__pwned = 3</script>"><img src=x onerror="window.__pwned = 4">'
HOSTILE_AUDIO_DESCRIPTION = '<script>window.__pwned = 5</script>waves"><img src=x onerror="window.__pwned = 6">'
TRANSCRIPT = "welcome back, today we film the ocean at dawn"
OUTSIDE_ID, SYMLINK_ID, FAILED_ID, SILENT_ID = "outside-root", "symlink-out", "syn-0003", "syn-0024"


@dataclass
class ExploreStore:
    cfg: SeerecConfig  # the explorer's config: media.roots is the catalog's media folder only
    compare_dir: Path  # a comparison folder: compare.md, compare.png and one run per model
    ablation_dir: Path  # an ablation folder: ablation.md/.csv/.json/.png and its cells' runs three levels down
    hostile_ids: tuple[str, str]  # the items whose title holds HTML (the first also in its description)
    video_id: str
    secret: Path  # a file outside the media roots


def build_explore_store(root: Path, n_items: int = 24, n_users: int = 40) -> ExploreStore:
    catalog = make_catalog(root / "catalog", n_items=n_items, n_users=n_users, seed=0)
    frame = pd.read_parquet(catalog.manifest)
    frame.loc[0, "title"] = SCRIPT_TITLE
    frame.loc[1, "title"] = ATTRIBUTE_TITLE
    outside = root / "outside"
    outside.mkdir()
    secret = outside / "secret.mp4"
    secret.write_bytes(Path(frame.loc[frame["media_type"] == "video", "media_uri"].iloc[0]).read_bytes())
    link = catalog.root / "media" / "link.mp4"
    os.symlink(secret, link)
    extra = pd.DataFrame([{"item_id": OUTSIDE_ID, "media_uri": str(secret), "media_type": "video",
                           "title": "a file outside the roots", "topic": "x", "metadata": "{}"},
                          {"item_id": SYMLINK_ID, "media_uri": str(link), "media_type": "video",
                           "title": "a symlink out of the root", "topic": "x", "metadata": "{}"}])
    pd.concat([frame, extra], ignore_index=True).to_parquet(catalog.manifest, index=False)
    data = {"store": {"uri": str(root / "store")}, "media": {"num_frames": 2, "max_side": 128},
            "ingest": {"source": "manifest", "path": str(catalog.manifest)},
            "quantize": {"columns": ["text_vec"], "levels": 2, "codebook_size": 4, "out_dir": str(root / "tok")},
            "train": {"data": {"path": str(catalog.interactions)}, "runs_dir": str(root / "runs"), "epochs": 2,
                      "progress": False, "cpu_threads": 1, "sasrec": {"hidden": 16, "max_len": 10}},
            "compare": {"name": "compare", "models": ["popularity", "sasrec", "bpr"]},
            "ablate": {"name": "ablation", "feature_sets": ["text_vec"], "models": ["content_knn"],
                       "reference_models": ["popularity"]}}
    # Ingest with the whole folder as root (the rows outside the catalog's media get in), explore with less.
    run_ingest(validate_config({**data, "media": {**data["media"], "roots": [str(root)]}}))
    cfg = validate_config({**data, "media": {**data["media"], "roots": [str(catalog.root / "media")]}})
    store = ItemStore(cfg.store)
    embed_titles(store, cfg)
    items = store.scan(["item_id"])["item_id"].to_pylist()
    described = description_family()
    texts = [HOSTILE_DESCRIPTION if i == items[0] else None if i == FAILED_ID else f"a clip numbered {i}"
             for i in items]
    errors = ["the model ran out of memory" if i == FAILED_ID else None for i in items]
    store.write_family(described, described.rows(pa.array(items), pa.array(texts), "tiny-qwen2-vl@test", errors,
                                                 prompt_id="video-v1"))
    video = frame.loc[(frame["media_type"] == "video") & (frame.index > 1), "item_id"].iloc[0]
    write_audio_texts(store, cfg, video)
    run_quantize(cfg)
    from recommenders.experiment import run_compare

    _, compare_dir = run_compare(cfg)
    return ExploreStore(cfg, compare_dir, ablate_in_process(cfg), (frame.loc[0, "item_id"], frame.loc[1, "item_id"]),
                        video, secret)


def write_audio_texts(store: ItemStore, cfg: SeerecConfig, video: str) -> None:
    """The rows `seerec transcribe` and `seerec describe-audio` write for the videos, with their model ids, prompt
    id and params: `video` gets TRANSCRIPT and the hostile audio description, SILENT_ID is skipped as silent."""
    rows = store.scan(["item_id", "media_type"], "media_type = 'video'")["item_id"].to_pylist()
    skipped = [NO_AUDIO if i == SILENT_ID else None for i in rows]
    heard = [None if i == SILENT_ID else TRANSCRIPT if i == video else f"a narrator speaks over {i}" for i in rows]
    transcript = transcript_family(cfg.transcribe.column)
    store.write_family(transcript, transcript.rows(
        pa.array(rows), pa.array(heard), transcribe_model_id(cfg.transcribe), [None] * len(rows),
        language=[None if t is None else "en" for t in heard],
        language_probability=[None if t is None else 0.97 for t in heard], skipped=skipped))
    sounds = [None if i == SILENT_ID else HOSTILE_AUDIO_DESCRIPTION if i == video else f"soft music under {i}"
              for i in rows]
    described = audio_description_family(cfg.describe_audio.column)
    store.write_family(described, described.rows(
        pa.array(rows), pa.array(sounds), model_identity(cfg.describe_audio.model), [None] * len(rows),
        prompt_id=[None if t is None else audio_prompt_id(cfg) for t in sounds],
        params=audio_generation_params(cfg), skipped=skipped))


def audio_prompt_id(cfg: SeerecConfig) -> str:
    return PromptSet(cfg.describe_audio.prompts).prompt_id(cfg.describe_audio.modality)


def ablate_in_process(cfg: SeerecConfig) -> Path:
    """What `seerec ablate` does, minus Ray (a Ray task per cell costs ~25 s here, this ~2 s): the driver's plan,
    each cell trained by the task's own `finish_cell`, the driver's table; the folder `seerec ablate` writes."""
    plan = plan_ablation(cfg)
    make_semantic_ids(plan.runs, plan.cells)
    for cell in plan.cells:
        ab.finish_cell(plan.runs[cell], cell)
    write_outputs(cfg, plan)
    return Path(cfg.train.runs_dir) / cfg.ablate.name


def embed_titles(store: ItemStore, cfg: SeerecConfig) -> None:
    """What `seerec embed` does for text, minus Ray: the stage's callable over every item, written as its family."""
    items = render_texts(store.scan(["item_id", "title", "metadata"]), cfg.embed.text)
    batch = TextEmbedder(cfg.embed.text)({"item_id": items["item_id"].to_numpy(zero_copy_only=False),
                                          "text": items["text"].to_numpy(zero_copy_only=False)})
    family = vector_family(cfg.embed.text.column, skippable=True)
    rows = family.batch_rows(batch, "vector", text_model_id(cfg.embed.text), source=cfg.embed.text.template)
    store.write_family(family.of_rows(rows), rows)
