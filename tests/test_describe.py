"""Describe: prompts, vLLM payloads, the transformers backend on a tiny real Qwen2-VL, and the Ray job."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from extractors.describe.backends import (
    DescribeRequest,
    TransformersBackend,
    model_family,
    render_prompts,
    vllm_engine_args,
    vllm_inputs,
    vllm_sampling_args,
)
from extractors.describe.prompts import PromptSet
from jobs.describe import run_describe
from jobs.ingest import run_ingest
from jobs.synthetic import make_catalog
from pipeline.config import DescribeConfig, PromptConfig, load_config
from pipeline.models import model_identity
from pipeline.store import ItemStore
from tests.helpers import flushed_descriptions, kill_session, require_shared, vllm_gpu_missing

VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"


def video_request(frames: int = 4, fps: float = 30.0) -> DescribeRequest:
    rng = np.random.default_rng(0)
    return DescribeRequest("video", "Describe it.", rng.integers(0, 255, (frames, 96, 128, 3), dtype=np.uint8),
                           fps=fps, frame_indices=np.arange(frames) * 10, total_frames=frames * 10)


# ---- prompts -------------------------------------------------------------------------------------------
def test_prompt_ids_follow_the_prompt_and_title_setting():
    prompts = PromptSet(PromptConfig())
    assert prompts.prompt_id("video") != prompts.prompt_id("image")
    assert prompts.prompt_id("video") == PromptSet(PromptConfig()).prompt_id("video")  # stable across runs
    content_only = PromptSet(PromptConfig(include_title=False))
    assert content_only.prompt_id("video") != prompts.prompt_id("video")
    assert PromptSet(PromptConfig(version="2")).prompt_id("video").startswith("video-v2-")
    assert PromptSet(PromptConfig(video="Say what you see.")).prompt_id("video") != prompts.prompt_id("video")


def test_title_is_injected_unless_content_only():
    prompts = PromptSet(PromptConfig())
    assert 'titled it "cats on a boat"' in prompts.render("video", " cats on a boat ")
    assert prompts.render("video", None) == PromptConfig().video
    assert "cats" not in PromptSet(PromptConfig(include_title=False)).render("video", "cats on a boat")
    with pytest.raises(ValueError, match="describe takes video and image"):
        prompts.render("text", "x")


def test_default_prompts_ask_for_every_aspect():
    for text in (PromptConfig().video, PromptConfig().image):
        for aspect in ("who and what", "core content", "mood and tone", "audience", "cultural references",
                       "humour or parody", "one self-contained paragraph"):
            assert aspect in text


# ---- vLLM payloads (the format of vLLM's documented `LLM.generate` prompt dicts) -------------------------
def test_vllm_video_payload_for_qwen2_vl_is_a_frame_array(tiny_qwen):
    from transformers import AutoProcessor

    request = video_request()
    text = render_prompts(AutoProcessor.from_pretrained(tiny_qwen), [request])[0]
    payload = vllm_inputs(text, request, "qwen2_vl")
    assert set(payload) == {"prompt", "multi_modal_data"}
    assert payload["prompt"].count(VIDEO_PLACEHOLDER) == 1 and IMAGE_PLACEHOLDER not in payload["prompt"]
    assert payload["prompt"].endswith("<|im_start|>assistant\n")
    video = payload["multi_modal_data"]["video"]
    assert isinstance(video, np.ndarray) and video.dtype == np.uint8 and video.shape == (4, 96, 128, 3)


def test_vllm_video_payload_for_qwen3_vl_carries_metadata():
    frames, metadata = vllm_inputs("p", video_request(frames=6, fps=25.0), "qwen3_vl")["multi_modal_data"]["video"]
    assert frames.shape == (6, 96, 128, 3) and frames.dtype == np.uint8
    assert metadata == {"fps": 25.0, "duration": 60 / 25.0, "total_num_frames": 60,
                        "frames_indices": [0, 10, 20, 30, 40, 50], "video_backend": "seerec",
                        "do_sample_frames": False}


def test_vllm_image_payload_is_a_pil_image():
    from PIL import Image

    request = DescribeRequest("image", "p", np.zeros((1, 40, 50, 3), np.uint8))
    image = vllm_inputs("p", request, "qwen2_vl")["multi_modal_data"]["image"]
    assert isinstance(image, Image.Image) and image.size == (50, 40)


def test_vllm_engine_and_sampling_settings_come_from_config():
    cfg = DescribeConfig(model="Qwen/Qwen3-VL-8B-Instruct",
                         vllm={"tensor_parallel_size": 2, "max_model_len": 8192, "gpu_memory_utilization": 0.8},
                         generation={"max_new_tokens": 200})
    engine = vllm_engine_args(cfg)
    assert engine["limit_mm_per_prompt"] == {"video": 1, "image": 1}
    assert engine["tensor_parallel_size"] == 2
    assert (engine["max_model_len"], engine["gpu_memory_utilization"]) == (8192, 0.8)
    assert vllm_sampling_args(cfg) == {"max_tokens": 200, "temperature": 0.0}
    sampled = cfg.model_copy(update={"generation": cfg.generation.model_copy(update={"do_sample": True})})
    assert vllm_sampling_args(sampled)["temperature"] == 0.7
    assert model_family(cfg) == "qwen3_vl" and model_family(DescribeConfig()) == "qwen2_vl"


@pytest.mark.gpu
@pytest.mark.skipif(vllm_gpu_missing() is not None, reason=str(vllm_gpu_missing()))
def test_vllm_backend_describes_on_a_gpu():
    """Runs the real vLLM backend; set SEEREC_VLLM_MODEL to a local or hub Qwen2/2.5/3-VL checkpoint."""
    from extractors.describe.backends import VllmBackend

    cfg = DescribeConfig(backend="vllm", model=os.environ.get("SEEREC_VLLM_MODEL", "Qwen/Qwen2.5-VL-3B-Instruct"),
                         vllm={"max_model_len": 8192, "gpu_memory_utilization": 0.5},
                         generation={"max_new_tokens": 64})
    image = DescribeRequest("image", PromptConfig().image, np.full((1, 224, 224, 3), 200, np.uint8))
    generations = VllmBackend(cfg).generate([video_request(frames=8), image])
    assert all(g.text and g.generated_tokens > 0 and g.prompt_tokens > 0 for g in generations)


# ---- transformers backend on the tiny real-architecture checkpoint -------------------------------------
def test_transformers_backend_batches_videos_and_images(tiny_qwen):
    backend = TransformersBackend(DescribeConfig(model=tiny_qwen, generation={"max_new_tokens": 8}))
    image = DescribeRequest("image", "Describe it.", np.zeros((1, 64, 64, 3), np.uint8))
    generations = backend.generate([video_request(), image, video_request(frames=2)])
    assert len(generations) == 3
    assert all(g.text and 0 < g.generated_tokens <= 8 and g.prompt_tokens > 10 for g in generations)
    # Left padding: the same request alone and inside a batch gives the same greedy text.
    alone = backend.generate([image])[0]
    assert alone.text == generations[1].text


def test_prompt_too_long_is_refused(tiny_qwen):
    from extractors.describe.backends import PromptTooLong

    backend = TransformersBackend(DescribeConfig(model=tiny_qwen, max_prompt_tokens=16))
    with pytest.raises(PromptTooLong, match="over the limit of 16"):
        backend.generate([video_request()])


# ---- the job ---------------------------------------------------------------------------------------------
@pytest.fixture
def catalog_with_bad_media(tmp_path):
    catalog = make_catalog(tmp_path / "syn", n_items=8, n_users=2, seed=5)
    frame = pd.read_parquet(catalog.manifest)[["item_id", "media_uri", "media_type", "title"]]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(5000))
    bad = pd.DataFrame([
        {"item_id": "bad-corrupt", "media_uri": str(corrupt), "media_type": "video", "title": "noise"},
        {"item_id": "bad-missing", "media_uri": str(tmp_path / "gone.png"), "media_type": "image", "title": "gone"},
    ])
    manifest = tmp_path / "manifest.parquet"
    pd.concat([frame, bad]).to_parquet(manifest)
    return manifest, set(frame.item_id)


@pytest.mark.slow
def test_job_describes_good_items_and_records_bad_ones(catalog_with_bad_media, make_config, tiny_qwen, ray_local):
    manifest, good = catalog_with_bad_media
    cfg = make_config(ingest={"source": "manifest", "path": str(manifest)},
                      describe={"model": tiny_qwen, "items_per_batch": 4, "generation": {"max_new_tokens": 8}})
    run_ingest(cfg)
    summary = run_describe(cfg)
    assert (summary.done, summary.failed) == (len(good), 2)
    assert summary.extra["tokens_generated"] > 0
    rows = {r["item_id"]: r for r in ItemStore(cfg.store).scan().to_pylist()}
    for item in good:
        row = rows[item]
        assert row["description"] and row["description_error"] is None
        assert row["description_model"] == model_identity(tiny_qwen)
        assert row["description_prompt_id"] == PromptSet(cfg.describe.prompts).prompt_id(row["media_type"])
        assert row["description_tokens"] > 0 and row["description_at"] is not None
    assert rows["bad-corrupt"]["description_error"].startswith("video ")
    assert "missing" in rows["bad-missing"]["description_error"]
    assert rows["bad-missing"]["description"] is None

    again = run_describe(cfg)
    assert (again.done, again.skipped) == (0, len(good))  # only the two bad items are tried again
    new_prompt = cfg.model_copy(deep=True)
    new_prompt.describe.prompts.version = "2"
    assert run_describe(new_prompt).done == len(good)  # a changed prompt makes old descriptions stale


@pytest.mark.slow
def test_model_error_fails_only_its_item(catalog_with_bad_media, make_config, tiny_qwen, ray_local):
    """Videos need far more visual tokens than images: a prompt limit between the two fails only videos."""
    manifest, good = catalog_with_bad_media
    # With these short prompts an image needs about 30 prompt tokens and an 8-frame video about 80.
    cfg = make_config(ingest={"source": "manifest", "path": str(manifest)}, media={"num_frames": 8},
                      describe={"model": tiny_qwen, "items_per_batch": 8, "max_prompt_tokens": 50,
                                "prompts": {"video": "Describe.", "image": "Describe.", "include_title": False},
                                "generation": {"max_new_tokens": 16}})
    run_ingest(cfg)
    run_describe(cfg)
    rows = ItemStore(cfg.store).scan(["item_id", "media_type", "description", "description_error"]).to_pylist()
    for row in rows:
        if row["item_id"] in good and row["media_type"] == "video":
            assert "over the limit of 50" in row["description_error"]
        elif row["item_id"] in good:
            assert row["description"] and row["description_error"] is None, row


@pytest.mark.slow
def test_real_microlens_videos(make_config, tiny_qwen, ray_local, tmp_path):
    root = require_shared("microlens-sample")
    cfg = make_config(ingest={"source": "microlens", "path": str(root)},
                      describe={"model": tiny_qwen, "items_per_batch": 3, "where": ["media_type = video"],
                                "generation": {"max_new_tokens": 8}})
    run_ingest(cfg)
    summary = run_describe(cfg)
    assert (summary.total, summary.done, summary.failed) == (3, 3, 0)
    rows = ItemStore(cfg.store).scan(["item_id", "title", "description", "description_prompt_tokens"],
                                     "description IS NOT NULL").to_pylist()
    assert {r["item_id"] for r in rows} == {"1002", "10034", "10040"}
    assert all(r["description"] and r["description_prompt_tokens"] > 0 for r in rows)


# Enough items that the kill, after 4 flushed rows, lands mid-job; few enough that the re-run is short.
N_KILLED = 24


@pytest.mark.slow
def test_killed_job_resumes_exactly_once(tmp_path, tiny_qwen, tiny_clip):
    """SIGKILL the job's whole session once rows are written; the re-run completes the rest."""
    catalog = make_catalog(tmp_path / "syn", n_items=N_KILLED, n_users=2, seed=7)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"uri": str(tmp_path / "store"), "write_batch_rows": 2},
        "ray": {"num_cpus": 2},
        "media": {"num_frames": 4, "max_side": 96},
        "ingest": {"source": "manifest", "path": str(catalog.manifest)},
        "describe": {"model": tiny_qwen, "items_per_batch": 2, "generation": {"max_new_tokens": 128}},
    }))
    command = [sys.executable, "-m", "jobs.describe", "--config", str(config)]
    assert subprocess.run([sys.executable, "-m", "jobs.ingest", "--config", str(config)], timeout=120).returncode == 0
    store = ItemStore(load_config(config).store)
    job = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and flushed_descriptions(store).num_rows < 4:
            time.sleep(0.2)
        written = flushed_descriptions(store).num_rows
        assert 4 <= written < N_KILLED, f"the kill came too late or never ({written} rows written)"
    finally:
        kill_session(job.pid)  # the driver and its Ray, the describe actors too (each in a process group of its own)
        job.wait()
    first = flushed_descriptions(store)
    assert store.staging_tables("description"), "the killed job's flushes wait in its staging table"
    assert subprocess.run(command, timeout=300).returncode == 0
    final = store.scan(["item_id", "description", "description_at"])
    assert final.num_rows == N_KILLED and len(set(final["item_id"].to_pylist())) == N_KILLED
    assert final["description"].null_count == 0
    by_id = {r["item_id"]: r for r in final.to_pylist()}
    for row in first.to_pylist():  # the first run's rows are untouched by the second
        assert by_id[row["item_id"]]["description_at"] == row["description_at"]
        assert by_id[row["item_id"]]["description"] == row["description"]
