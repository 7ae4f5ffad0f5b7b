"""describe-audio: prompts, vLLM payloads, tiny real Qwen2-Audio and Qwen2.5-Omni through the transformers
backend, the sound (and frames) decode pool, and the Ray job on a real store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from extractors.describe.backends import (
    DescribeRequest,
    TransformersBackend,
    render_prompts,
    vllm_engine_args,
    vllm_inputs,
)
from extractors.describe.prompts import PromptSet
from extractors.describe.sound import AudioVisualDecoder, AudioVisualInput
from jobs.describe_audio import run_describe_audio
from jobs.ingest import run_ingest
from pipeline.audio import NO_AUDIO
from pipeline.config import AudioConfig, AudioDescribeConfig, AudioPromptConfig, MediaConfig
from pipeline.models import ModelError, model_identity
from pipeline.store import ItemStore
from tests.audio_files import ramp_tone, write_audio, write_silent_video
from tests.helpers import require_shared, vllm_gpu_missing

AUDIO_PLACEHOLDER = "<|audio_bos|><|AUDIO|><|audio_eos|>"
VIDEO_PLACEHOLDER = "<|vision_bos|><|VIDEO|><|vision_eos|>"
RATE = 16000


@pytest.fixture(scope="session")
def tiny_audio(tmp_path_factory) -> str:
    from jobs.tiny_models import make_tiny_qwen2_audio

    return str(make_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny-qwen2-audio")))


@pytest.fixture(scope="session")
def tiny_omni(tmp_path_factory) -> str:
    from jobs.tiny_models import make_tiny_qwen2_5_omni

    return str(make_tiny_qwen2_5_omni(tmp_path_factory.mktemp("tiny-qwen2.5-omni")))


def tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def noise(seconds: float) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.1, int(seconds * RATE)).astype(np.float32)


def sound_request(audio: np.ndarray, prompt: str = "Describe the sound.") -> DescribeRequest:
    return DescribeRequest("audio", prompt, None, audio=audio, sample_rate=RATE)


def omni_request(audio: np.ndarray, frames: int = 4) -> DescribeRequest:
    pixels = np.random.default_rng(1).integers(0, 255, (frames, 96, 128, 3), dtype=np.uint8)
    return DescribeRequest("video", "Describe the clip.", pixels, fps=30.0, frame_indices=np.arange(frames) * 10,
                           total_frames=frames * 10, audio=audio, sample_rate=RATE)


# ---- prompts -------------------------------------------------------------------------------------------
def test_audio_prompts_have_their_own_ids():
    prompts = PromptSet(AudioPromptConfig())
    assert prompts.kinds == ("audio", "omni")
    assert prompts.prompt_id("audio").startswith("audio-v1-") and prompts.prompt_id("omni").startswith("omni-v1-")
    assert PromptSet(AudioPromptConfig(version="2")).prompt_id("audio") != prompts.prompt_id("audio")
    assert "music" in prompts.render("audio", None) and "speech" in prompts.render("audio", None)
    assert 'titled it "rain"' in prompts.render("omni", "rain")
    with pytest.raises(ValueError, match="describe takes audio and omni"):
        prompts.render("image", None)


# ---- vLLM payloads (vLLM's `LLM.generate` prompt dicts) --------------------------------------------------
def test_vllm_audio_payload_is_samples_and_rate(tiny_audio):
    from transformers import AutoProcessor

    request = sound_request(tone(2.0))
    text = render_prompts(AutoProcessor.from_pretrained(tiny_audio), [request])[0]
    payload = vllm_inputs(text, request, "qwen2_vl")
    assert set(payload) == {"prompt", "multi_modal_data"}  # sound alone needs no processor flag
    assert payload["prompt"].count(AUDIO_PLACEHOLDER) == 1 and payload["prompt"].endswith("<|im_start|>assistant\n")
    samples, rate = payload["multi_modal_data"]["audio"]
    assert set(payload["multi_modal_data"]) == {"audio"}
    assert rate == RATE and samples.dtype == np.float32 and samples.shape == (2 * RATE,)


def test_vllm_omni_payload_interleaves_a_videos_sound(tiny_omni):
    from transformers import AutoProcessor

    request = omni_request(noise(3.0))
    text = render_prompts(AutoProcessor.from_pretrained(tiny_omni), [request])[0]
    payload = vllm_inputs(text, request, "qwen2_vl")
    assert payload["prompt"].count(VIDEO_PLACEHOLDER) == 1 and AUDIO_PLACEHOLDER not in payload["prompt"]
    assert payload["mm_processor_kwargs"] == {"use_audio_in_video": True}
    video, (samples, rate) = payload["multi_modal_data"]["video"], payload["multi_modal_data"]["audio"]
    assert video.dtype == np.uint8 and video.shape == (4, 96, 128, 3)
    assert rate == RATE and samples.shape == (3 * RATE,)


def test_vllm_limits_allow_exactly_the_modalities_sent():
    assert vllm_engine_args(AudioDescribeConfig())["limit_mm_per_prompt"] == {"audio": 1}
    omni = AudioDescribeConfig(modality="omni", model="Qwen/Qwen2.5-Omni-7B", vllm={"max_audios_per_prompt": 2})
    assert vllm_engine_args(omni)["limit_mm_per_prompt"] == {"audio": 2, "video": 1}


@pytest.mark.gpu
@pytest.mark.skipif(vllm_gpu_missing() is not None, reason=str(vllm_gpu_missing()))
def test_vllm_backend_describes_sound_on_a_gpu():
    """Runs the real vLLM backend; SEEREC_VLLM_AUDIO_MODEL names a local or hub Qwen2-Audio checkpoint."""
    from extractors.describe.backends import VllmBackend

    cfg = AudioDescribeConfig(backend="vllm", model=os.environ.get("SEEREC_VLLM_AUDIO_MODEL",
                                                                   "Qwen/Qwen2-Audio-7B-Instruct"),
                              vllm={"max_model_len": 4096, "gpu_memory_utilization": 0.5},
                              generation={"max_new_tokens": 64})
    generations = VllmBackend(cfg).generate([sound_request(tone(3.0)), sound_request(noise(5.0))])
    assert all(g.text and g.generated_tokens > 0 and g.prompt_tokens > 0 for g in generations)


# ---- transformers backend on the tiny real-architecture checkpoints --------------------------------------
def test_qwen2_audio_batches_sounds_of_different_lengths(tiny_audio):
    backend = TransformersBackend(AudioDescribeConfig(model=tiny_audio, generation={"max_new_tokens": 8}))
    assert type(backend.model).__name__ == "Qwen2AudioForConditionalGeneration"
    short, long = sound_request(tone(1.5)), sound_request(noise(4.0))
    generations = backend.generate([short, long])
    assert all(g.text and 0 < g.generated_tokens <= 8 for g in generations)
    assert generations[1].prompt_tokens > generations[0].prompt_tokens  # more sound, more audio tokens
    assert backend.generate([long])[0].text == generations[1].text  # left padding keeps greedy text


def test_qwen2_5_omni_reads_frames_and_sound_together(tiny_omni):
    backend = TransformersBackend(AudioDescribeConfig(model=tiny_omni, modality="omni",
                                                      generation={"max_new_tokens": 8}))
    assert type(backend.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    with_sound, sound_only = omni_request(tone(2.0)), sound_request(noise(2.0))
    generations = backend.generate([with_sound, sound_only, omni_request(noise(3.0))])
    assert all(g.text and 0 < g.generated_tokens <= 8 for g in generations)
    silent_frames = backend._inputs([omni_request(tone(2.0))])[0]["input_ids"].shape[1]
    frames_only = DescribeRequest("video", "Describe the clip.", with_sound.frames, fps=30.0,
                                  frame_indices=with_sound.frame_indices, total_frames=40)
    assert silent_frames > backend._inputs([frames_only])[0]["input_ids"].shape[1]  # the sound is in the prompt


# ---- the decode pool -------------------------------------------------------------------------------------
@pytest.fixture
def sound_files(tmp_path):
    return {
        "clip": write_audio(tmp_path / "clip.mp4", ramp_tone(2.0, 44100, channels=2), 44100, layout="stereo",
                            video=True),
        "song": write_audio(tmp_path / "song.m4a", ramp_tone(3.0, 48000), 48000),
        "silent": write_silent_video(tmp_path / "silent.mp4"),
    }


def test_decoder_gives_sound_and_for_omni_frames(sound_files):
    batch = {"item_id": np.array(["clip", "song", "silent"], dtype=object),
             "media_uri": np.array([str(sound_files[k]) for k in ("clip", "song", "silent")], dtype=object),
             "media_type": np.array(["video", "audio", "video"], dtype=object)}
    sound_only = AudioVisualDecoder(AudioVisualInput(audio=AudioConfig()))(dict(batch))
    assert "frames" not in sound_only and list(sound_only["sample_rate"]) == [RATE] * 3
    out = AudioVisualDecoder(AudioVisualInput(audio=AudioConfig(), media=MediaConfig(num_frames=4)))(dict(batch))
    assert list(out["error"]) == [None, None, None] and list(out["skipped"]) == [None, None, NO_AUDIO]
    assert out["audio"][0].shape == pytest.approx((2 * RATE,), abs=800) and out["audio"][1].dtype == np.float32
    assert out["frames"][0].shape[0] == 4 and out["frames"][0].dtype == np.uint8
    assert out["frames"][1].shape[0] == 0 and out["frames"][2].shape[0] == 0  # no frames for sound alone or none


# ---- the job ---------------------------------------------------------------------------------------------
@pytest.fixture
def sound_catalog(tmp_path, sound_files):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(5000))
    rows = [("clip", "video", sound_files["clip"], "a tone"), ("song", "audio", sound_files["song"], "a song"),
            ("silent", "video", sound_files["silent"], "quiet"), ("bad-corrupt", "video", corrupt, "noise"),
            ("bad-missing", "audio", tmp_path / "gone.m4a", "gone")]
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame([{"item_id": i, "media_type": t, "media_uri": str(p), "title": title}
                  for i, t, p, title in rows]).to_parquet(manifest)
    return manifest


@pytest.mark.slow
def test_job_describes_sound_skips_silence_and_records_bad_items(sound_catalog, make_config, tiny_audio, ray_local):
    cfg = make_config(ingest={"source": "manifest", "path": str(sound_catalog)},
                      describe_audio={"model": tiny_audio, "items_per_batch": 2, "generation": {"max_new_tokens": 8}})
    run_ingest(cfg)
    summary = run_describe_audio(cfg)
    assert (summary.total, summary.done, summary.failed) == (5, 2, 2)
    assert summary.extra[NO_AUDIO] == 1 and summary.extra["tokens_generated"] > 0
    rows = {r["item_id"]: r for r in ItemStore(cfg.store).scan().to_pylist()}
    prompt_id = PromptSet(cfg.describe_audio.prompts).prompt_id("audio")
    for item in ("clip", "song"):
        row = rows[item]
        assert row["audio_description"] and row["audio_description_error"] is None
        assert row["audio_description_model"] == model_identity(tiny_audio)
        assert row["audio_description_prompt_id"] == prompt_id
        assert row["audio_description_tokens"] > 0 and '"modality": "audio"' in row["audio_description_params"]
    silent = rows["silent"]
    assert silent["audio_description_skipped"] == NO_AUDIO and silent["audio_description_error"] is None
    assert silent["audio_description"] is None
    assert rows["bad-corrupt"]["audio_description_error"].startswith("video ")
    assert "missing" in rows["bad-missing"]["audio_description_error"]
    assert "description" not in rows["clip"]  # the video describe family is untouched

    folder = Path(tiny_audio)  # the same folder spelled another way
    relative = cfg.model_copy(update={"describe_audio": cfg.describe_audio.model_copy(
        update={"model": f"{folder.parent}/../{folder.parent.name}/{folder.name}/"})})
    again = run_describe_audio(relative)
    assert (again.done, again.failed, again.skipped) == (0, 2, 3)  # only the two bad items are tried again


@pytest.mark.slow
def test_omni_job_on_real_microlens_videos(make_config, tiny_omni, ray_local):
    root = require_shared("microlens-sample")
    cfg = make_config(ingest={"source": "microlens", "path": str(root)}, audio={"max_seconds": 10},
                      describe_audio={"model": tiny_omni, "modality": "omni", "items_per_batch": 3,
                                      "where": ["media_type = video"], "generation": {"max_new_tokens": 8}})
    run_ingest(cfg)
    summary = run_describe_audio(cfg)
    errors = [e for e in ItemStore(cfg.store).scan(["audio_description_error"]).column(0).to_pylist() if e]
    assert (summary.total, summary.done, summary.failed) == (3, 3, 0), errors
    rows = ItemStore(cfg.store).scan(["item_id", "audio_description", "audio_description_prompt_id",
                                      "audio_description_prompt_tokens"], "audio_description IS NOT NULL").to_pylist()
    assert {r["item_id"] for r in rows} == {"1002", "10034", "10040"}
    assert all(r["audio_description_prompt_id"].startswith("omni-v1-") for r in rows)
    assert all(r["audio_description_prompt_tokens"] > 100 for r in rows)  # frames and sound tokens


def test_missing_model_folder_is_one_sentence(make_config, tmp_path):
    cfg = make_config(describe_audio={"model": str(tmp_path / "no-such-model")})
    with pytest.raises(ModelError, match="describe_audio.model: the model folder .* does not exist"):
        run_describe_audio(cfg)


# ---- the front doors -------------------------------------------------------------------------------------
def test_cli_builds_tiny_audio_models_and_refuses_a_missing_model(tmp_path):
    seerec = str(Path(sys.executable).with_name("seerec"))
    built = subprocess.run([seerec, "make-test-model", "--kind", "qwen2-audio", str(tmp_path / "m")],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0 and "describe_audio.model=" in built.stdout
    assert (tmp_path / "m" / "processor_config.json").is_file() and (tmp_path / "m" / "model.safetensors").is_file()
    wrong = subprocess.run([seerec, "make-test-model", "--kind", "qwen9", str(tmp_path / "x")],
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "qwen2-audio" in wrong.stderr
    for command in ([seerec, "describe-audio"], [sys.executable, "-m", "jobs.describe_audio"]):
        result = subprocess.run([*command, f"describe_audio.model={tmp_path / 'gone'}", f"store.uri={tmp_path / 's'}"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
