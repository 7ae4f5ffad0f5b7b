"""The synthetic catalog: real, decodable media, reproducible from the seed, and interactions with signal."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from jobs.synthetic import SyntheticCatalog, items, make_catalog
from jobs.synthetic.frames import HEIGHT, WIDTH
from jobs.synthetic.sound import RATE
from jobs.synthetic.topics import TOPICS

N_ITEMS, N_USERS = 40, 30
COLUMNS = ["item_id", "media_uri", "media_type", "title", "topic", "metadata"]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCatalog:
    return make_catalog(tmp_path_factory.mktemp("syn"), n_items=N_ITEMS, n_users=N_USERS, seed=7)


@pytest.fixture(scope="module")
def manifest(catalog: SyntheticCatalog) -> pd.DataFrame:
    return pd.read_parquet(catalog.manifest)


@pytest.fixture(scope="module")
def interactions(catalog: SyntheticCatalog) -> pd.DataFrame:
    return pd.read_csv(catalog.interactions)


def _videos(manifest: pd.DataFrame) -> list[tuple[str, int]]:
    rows = manifest[manifest.media_type == "video"]
    return [
        (uri, json.loads(meta)["n_frames"]) for uri, meta in zip(rows.media_uri, rows.metadata, strict=True)
    ]


def test_manifest_columns_and_counts(catalog: SyntheticCatalog, manifest: pd.DataFrame) -> None:
    assert catalog.manifest == catalog.root / "catalog.parquet"
    assert catalog.interactions == catalog.root / "interactions.csv"
    assert list(manifest.columns) == COLUMNS
    assert len(manifest) == catalog.n_items == N_ITEMS
    assert manifest.item_id.is_unique and manifest.item_id.iloc[0] == "syn-0001"
    assert (manifest.media_type == "video").sum() == N_ITEMS // 2
    assert set(manifest.media_type) == {"video", "image"}
    assert set(manifest.topic) == set(catalog.topics) and len(catalog.topics) == 8
    for title, topic, meta in zip(manifest.title, manifest.topic, manifest.metadata, strict=True):
        assert 3 <= len(title.split()) <= 6
        assert json.loads(meta)["topic"] == topic


def test_media_files_exist_and_decode(manifest: pd.DataFrame) -> None:
    for uri in manifest.media_uri:
        path = Path(uri)
        assert path.is_absolute() and path.stat().st_size > 0
    for uri in manifest[manifest.media_type == "image"].media_uri:
        with Image.open(uri) as image:
            assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)
    for uri, n_frames in _videos(manifest):
        with av.open(uri) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(frames) == n_frames and 12 <= n_frames <= 24
        assert frames[0].shape == (HEIGHT, WIDTH, 3)
        assert not np.array_equal(frames[0], frames[-1]), "videos should move"


def test_videos_decode_with_decord(manifest: pd.DataFrame) -> None:
    decord = pytest.importorskip("decord")
    for uri, n_frames in _videos(manifest):
        reader = decord.VideoReader(uri)
        assert len(reader) == n_frames
        assert reader.get_batch(list(range(n_frames))).asnumpy().shape == (n_frames, HEIGHT, WIDTH, 3)


def test_videos_sound_like_their_topic(manifest: pd.DataFrame) -> None:
    """Each video has an AAC track as long as its frames, loudest at its topic's pitch (an item detunes by <3%)."""
    from pipeline.audio import decode_audio
    from pipeline.config import AudioConfig

    pitches = {topic.name: topic.pitch for topic in TOPICS}
    for uri, topic, meta in zip(manifest.media_uri, manifest.topic, manifest.metadata, strict=True):
        if not uri.endswith(".mp4"):
            continue
        with av.open(uri) as container:
            assert container.streams.audio[0].codec_context.name == "aac"
        sound = decode_audio(uri, "video", AudioConfig(sample_rate=RATE)).samples
        assert len(sound) / RATE == pytest.approx(json.loads(meta)["n_frames"] / items.FPS, abs=0.1)
        spectrum = np.abs(np.fft.rfft(sound))
        peak = np.fft.rfftfreq(len(sound), 1 / RATE)[int(np.argmax(spectrum))]
        assert peak == pytest.approx(pitches[topic], rel=0.05), (uri, topic)


def test_same_seed_same_catalog_other_seed_differs(tmp_path: Path, catalog: SyntheticCatalog) -> None:
    def load(c: SyntheticCatalog) -> tuple[pd.DataFrame, pd.DataFrame]:
        return pd.read_parquet(c.manifest).drop(columns="media_uri"), pd.read_csv(c.interactions)

    again = make_catalog(tmp_path / "again", n_items=N_ITEMS, n_users=N_USERS, seed=7)
    other = make_catalog(tmp_path / "other", n_items=N_ITEMS, n_users=N_USERS, seed=8, progress=True)
    (m0, i0), (m1, i1), (m2, i2) = load(catalog), load(again), load(other)
    pd.testing.assert_frame_equal(m0, m1)
    pd.testing.assert_frame_equal(i0, i1)
    assert not m0.equals(m2) and not i0.equals(i2)


def test_interactions_are_valid(
    catalog: SyntheticCatalog, manifest: pd.DataFrame, interactions: pd.DataFrame
):
    assert list(interactions.columns) == ["user_id", "item_id", "timestamp"]
    assert len(interactions) == catalog.n_interactions
    assert interactions.user_id.nunique() == catalog.n_users == N_USERS
    assert set(interactions.item_id) <= set(manifest.item_id)
    assert not interactions.duplicated(["user_id", "item_id"]).any()
    for _, user in interactions.groupby("user_id"):
        assert user.item_id.nunique() >= 5
        assert user.timestamp.is_monotonic_increasing and user.timestamp.is_unique


def test_users_stick_to_few_topics(manifest: pd.DataFrame, interactions: pd.DataFrame) -> None:
    """Each user's two commonest topics cover most of their items, far more than if topics were random."""

    def top_two_share(topic_of: dict[str, str]) -> float:
        shares = []
        for _, user in interactions.groupby("user_id"):
            counts = Counter(topic_of[i] for i in user.item_id)
            shares.append(sum(n for _, n in counts.most_common(2)) / len(user))
        return float(np.mean(shares))

    real = top_two_share(dict(zip(manifest.item_id, manifest.topic, strict=True)))
    shuffled = np.random.default_rng(0).permutation(manifest.topic.to_numpy())
    baseline = top_two_share(dict(zip(manifest.item_id, shuffled, strict=True)))
    assert real >= 0.75
    assert real >= baseline + 0.2


def test_users_follow_a_shared_order(interactions: pd.DataFrame) -> None:
    """Consecutive items repeat across users (a learnable next-item pattern), unlike shuffled histories."""

    def top_successor_share(histories: list[list[str]]) -> float:
        successors: dict[str, Counter] = {}
        for history in histories:
            for a, b in zip(history, history[1:], strict=False):
                successors.setdefault(a, Counter())[b] += 1
        return sum(c.most_common(1)[0][1] for c in successors.values()) / sum(
            c.total() for c in successors.values()
        )

    histories = [list(user.item_id) for _, user in interactions.groupby("user_id")]
    rng = np.random.default_rng(0)
    shuffled = [list(rng.permutation(h)) for h in histories]
    assert top_successor_share(histories) >= top_successor_share(shuffled) + 0.15


def test_mpeg4_fallback_decodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PyAV builds without libx264 get MPEG-4 part 2, which must decode just as well."""
    monkeypatch.setattr(items, "video_codec", lambda: "mpeg4")
    catalog = make_catalog(tmp_path, n_items=5, n_users=2, video_share=1.0)
    manifest = pd.read_parquet(catalog.manifest)
    assert {json.loads(m)["codec"] for m in manifest.metadata} == {"mpeg4"}
    for uri, n_frames in _videos(manifest):
        with av.open(uri) as container:
            assert container.streams.video[0].codec_context.name == "mpeg4"
            assert sum(1 for _ in container.decode(video=0)) == n_frames
