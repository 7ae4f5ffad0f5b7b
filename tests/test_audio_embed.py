"""CLAP audio embeddings into `audio_vec` and text embeddings of transcripts and audio descriptions, end to end
on a real store with a real local Ray and a tiny random-weight CLAP loaded like a published checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from extractors.audio_embed import ClapAudioEmbedder
from jobs.embed import run_embed
from jobs.ingest import run_ingest
from pipeline.audio import NO_AUDIO
from pipeline.config import AudioEmbedConfig
from pipeline.models import ModelError, model_identity
from pipeline.schema import description_family, transcript_family
from pipeline.store import ItemStore, StoreError
from tests.audio_files import ramp_tone, write_audio, write_silent_video
from tests.helpers import require_shared

OFF = {"text": {"enabled": False}, "image": {"enabled": False}}


@pytest.fixture
def sound_catalog(tmp_path):
    video = require_shared("microlens-sample", "videos", "10034.mp4")
    long_tone = write_audio(tmp_path / "tone.m4a", ramp_tone(25.0, 44100), 44100)
    silent = write_silent_video(tmp_path / "silent.mp4")
    (tmp_path / "broken.mp3").write_bytes(np.random.default_rng(1).integers(0, 256, 3000, np.uint8).tobytes())
    manifest = tmp_path / "items.csv"
    manifest.write_text("item_id,media_uri,media_type,title\n"
                        f"clip,{video},video,a real clip\ntone,{long_tone},audio,a rising tone\n"
                        f"silent,{silent},video,no sound\nbroken,{tmp_path / 'broken.mp3'},audio,broken\n"
                        "note,,text,only words\n")
    return manifest


def test_windows_cover_the_item_and_drop_a_short_tail(tiny_clap):
    embedder = ClapAudioEmbedder({"model": tiny_clap, "device": "cpu"})
    assert embedder.window == 480_000  # 10 s at 48 kHz
    assert [len(w) for w in embedder.windows(np.zeros(1_200_000, np.float32))] == [480_000, 480_000, 240_000]
    assert [len(w) for w in embedder.windows(np.zeros(984_000, np.float32))] == [480_000, 480_000]
    assert [len(w) for w in embedder.windows(np.zeros(24_000, np.float32))] == [24_000]


def test_a_checkpoint_at_another_rate_is_refused(tiny_clap):
    with pytest.raises(ValueError, match="set embed.audio.sample_rate=48000"):
        ClapAudioEmbedder(AudioEmbedConfig(model=tiny_clap, sample_rate=16000, device="cpu"))


@pytest.mark.slow
def test_clap_embeds_sound_skips_silent_videos_and_resumes(sound_catalog, make_config, tiny_clap, ray_local):
    videos = require_shared("microlens-sample", "videos")  # the real clip lives outside the manifest's folder
    cfg = make_config(ingest={"source": "manifest", "path": str(sound_catalog)},
                      media={"roots": [str(sound_catalog.parent), str(videos)]},
                      embed={**OFF, "audio": {"enabled": True, "model": tiny_clap, "items_per_batch": 2}})
    run_ingest(cfg)
    [first] = run_embed(cfg)
    assert (first.stage, first.total, first.done, first.failed, first.extra[NO_AUDIO]) == ("embed-audio", 4, 2, 1, 1)
    store = ItemStore(cfg.store)
    assert store.schema.field("audio_vec").type.list_size == 32
    rows = {r["item_id"]: r for r in store.scan().to_pylist()}
    for item in ("clip", "tone"):
        assert np.linalg.norm(rows[item]["audio_vec"]) == pytest.approx(1.0, abs=1e-5)
        assert rows[item]["audio_vec_source"] == "first:120s"
        assert rows[item]["audio_vec_model"] == f"transformers-clap:{model_identity(tiny_clap)}"
    assert not np.allclose(rows["clip"]["audio_vec"], rows["tone"]["audio_vec"])
    assert rows["silent"]["audio_vec"] is None and rows["silent"]["audio_vec_skipped"] == NO_AUDIO
    assert rows["silent"]["audio_vec_error"] is None
    assert "broken.mp3 could not be decoded" in rows["broken"]["audio_vec_error"]
    assert "note" not in rows or rows["note"]["audio_vec"] is None

    # The same checkpoint spelled another way is the same model: nothing is redone.
    folder = Path(tiny_clap)
    spelling = f"{folder.parent}/../{folder.parent.name}/{folder.name}/"
    relative = cfg.model_copy(update={"embed": cfg.embed.model_copy(update={
        "audio": cfg.embed.audio.model_copy(update={"model": spelling})})})
    [again] = run_embed(relative)
    assert (again.skipped, again.done, again.failed) == (3, 0, 1)
    [forced] = run_embed(cfg, force=True)
    assert forced.done == 2
    after = {r["item_id"]: r for r in store.scan().to_pylist()}
    assert np.allclose(after["tone"]["audio_vec"], rows["tone"]["audio_vec"], atol=1e-6)  # deterministic windows


def test_a_missing_clap_folder_is_one_sentence(make_config, tmp_path):
    cfg = make_config(embed={**OFF, "audio": {"enabled": True, "model": str(tmp_path / "no-clap")}})
    with pytest.raises(ModelError, match=f"embed.audio.model: the model folder {tmp_path / 'no-clap'} does not exist .*"
                       "seerec make-test-model --kind clap"):
        run_embed(cfg)


def _write_sound_texts(store: ItemStore) -> None:
    """Transcripts and audio descriptions as their stages write them (one family each)."""
    ids = ["clip", "tone"]
    transcript = transcript_family()
    store.write_family(transcript, transcript.rows(ids, ["ni hao, welcome to my kitchen", ""], "faster-whisper:t",
                                                   [None, None], language=["zh", "en"],
                                                   language_probability=[0.9, 0.5]))
    described = description_family("audio_description")
    store.write_family(described, described.rows(ids, ["upbeat pop music and a cheerful voice", "a steady hum"],
                                                 "audio-llm:t", [None, None]))


@pytest.mark.slow
def test_embed_text_of_transcripts_and_audio_descriptions(sound_catalog, make_config, ray_local):
    videos = require_shared("microlens-sample", "videos")
    cfg = make_config(ingest={"source": "manifest", "path": str(sound_catalog)},
                      media={"roots": [str(sound_catalog.parent), str(videos)]})
    run_ingest(cfg)
    store = ItemStore(cfg.store)
    spoken = {"text": {"template": "{transcript}", "column": "transcript_vec"}, "image": {"enabled": False}}
    with pytest.raises(StoreError, match="the store has no column 'transcript'"):
        run_embed(make_config(ingest=cfg.ingest.model_dump(), embed=spoken))
    _write_sound_texts(store)

    templates = {"transcript_vec": "{transcript}", "audio_description_vec": "{audio_description}",
                 "title_vec": "{title}", "sound_vec": "{title}. {audio_description}. {transcript}"}
    for column, template in templates.items():
        [summary] = run_embed(make_config(ingest=cfg.ingest.model_dump(),
                                          embed={"text": {"template": template, "column": column},
                                                 "image": {"enabled": False}}))
        assert summary.total == 5
    rows = {r["item_id"]: r for r in store.scan().to_pylist()}
    # An empty transcript (the tone) and the items without one have nothing to embed: a recorded skip.
    assert rows["clip"]["transcript_vec"] is not None and rows["tone"]["transcript_vec_skipped"] == "no text to embed"
    assert rows["tone"]["transcript_vec_error"] is None
    assert rows["note"]["audio_description_vec"] is None and rows["tone"]["audio_description_vec"] is not None
    combined, title = np.array(rows["clip"]["sound_vec"]), np.array(rows["clip"]["title_vec"])
    assert rows["clip"]["sound_vec_source"] == templates["sound_vec"]
    assert not np.allclose(combined, title)  # the sound's texts changed the vector
    assert rows["note"]["sound_vec"] is not None  # a title alone still renders
