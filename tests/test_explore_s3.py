"""The explorer over a store on S3 whose media are S3 objects too: a real S3-compatible server (moto) on
127.0.0.1, the store and the media reached with the AWS_* environment. Media is streamed through the app
(Range requests included), never handed to the browser as a bucket URL, and only under the S3 media roots."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from starlette.testclient import TestClient

from jobs.explore import build_app
from jobs.ingest import run_ingest
from jobs.synthetic import make_catalog
from pipeline.config import SeerecConfig, validate_config
from pipeline.store import ItemStore
from tests.s3_server import S3Server, s3_server
from tests.test_explore import byteranges

PRIVATE_ID = "private-clip"


@dataclass
class S3Store:
    s3: S3Server
    cfg: SeerecConfig  # store on S3, media.roots = the bucket's media/ prefix only
    objects: dict[str, bytes]  # item id -> the bytes of its media object
    video_id: str
    image_id: str


@pytest.fixture(scope="module")
def on_s3(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explore-s3")
    catalog = make_catalog(tmp / "catalog", n_items=6, n_users=4, seed=3)
    frame = pd.read_parquet(catalog.manifest)
    with s3_server() as s3, pytest.MonkeyPatch.context() as env:
        for name, value in s3.env.items():
            env.setenv(name, value)
        client = s3.client()
        objects = {}
        for row in frame.itertuples():
            key = f"media/{Path(row.media_uri).name}"
            objects[row.item_id] = Path(row.media_uri).read_bytes()
            client.put_object(Bucket=s3.bucket, Key=key, Body=objects[row.item_id])
            frame.loc[row.Index, "media_uri"] = s3.uri(key)
        video = frame.loc[frame["media_type"] == "video"].iloc[0]
        client.put_object(Bucket=s3.bucket, Key="private/secret.mp4", Body=objects[video["item_id"]])
        private = {**video.to_dict(), "item_id": PRIVATE_ID, "media_uri": s3.uri("private/secret.mp4"),
                   "title": "an object outside the media roots"}
        frame = pd.concat([frame, pd.DataFrame([private])], ignore_index=True)
        manifest = tmp / "catalog-s3.parquet"
        frame.to_parquet(manifest, index=False)
        data = {"store": {"uri": s3.uri("store")}, "ingest": {"source": "manifest", "path": str(manifest)},
                "media": {"num_frames": 2, "max_side": 128}}
        # Ingest with the whole bucket as root (the private row gets in), explore with the media/ prefix only.
        run_ingest(validate_config({**data, "media": {**data["media"], "roots": [s3.uri("")]}}))
        cfg = validate_config({**data, "media": {**data["media"], "roots": [s3.uri("media/")]}})
        yield S3Store(s3, cfg, objects, str(video["item_id"]),
                      str(frame.loc[frame["media_type"] == "image", "item_id"].iloc[0]))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("explore-s3-thumbs")


@pytest.fixture(scope="module")
def client(on_s3, cache):
    return TestClient(build_app(on_s3.cfg, [], cache_dir=cache, load_encoder=False))


def test_catalog_and_item_pages_over_an_s3_store(client, on_s3):
    page = client.get("/")
    assert page.status_code == 200 and "7 items" in page.text
    assert page.text.count('class="card') == 7 and f'src="/thumbs/{on_s3.video_id}"' in page.text
    item = client.get(f"/items/{on_s3.video_id}")
    assert item.status_code == 200 and "<video" in item.text
    assert re.findall(r'<video[^>]* src="([^"]+)"', item.text) == [f"/media/{on_s3.video_id}"]  # the app, no bucket
    assert "The media is not shown" not in item.text


def test_thumbnails_of_s3_media_are_decoded_and_cached_locally(client, on_s3, cache):
    made = []
    for item_id in (on_s3.video_id, on_s3.image_id):
        thumb = client.get(f"/thumbs/{item_id}")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert thumb.content[:2] == b"\xff\xd8"
        made.append(thumb.content)
    assert sorted(p.read_bytes() for p in cache.glob("*.jpg")) == sorted(made)
    assert not [key for key in on_s3.s3.keys("") if key.endswith(".jpg")]  # nothing written to the bucket


def test_s3_media_is_streamed_with_ranges(client, on_s3):
    data = on_s3.objects[on_s3.video_id]
    whole = client.get(f"/media/{on_s3.video_id}")
    assert whole.status_code == 200 and whole.content == data and whole.headers["content-type"] == "video/mp4"
    part = client.get(f"/media/{on_s3.video_id}", headers={"Range": "bytes=100-1123"})
    assert part.status_code == 206 and part.content == data[100:1124]
    assert part.headers["content-range"] == f"bytes 100-1123/{len(data)}"
    tail = client.get(f"/media/{on_s3.video_id}", headers={"Range": "bytes=-64"})
    assert tail.status_code == 206 and tail.content == data[-64:]
    several = client.get(f"/media/{on_s3.video_id}", headers={"Range": "bytes=0-9,-5"})
    assert several.status_code == 206 and [p[1] for p in byteranges(several)] == [data[:10], data[-5:]]
    image = client.get(f"/media/{on_s3.image_id}")
    assert image.status_code == 200 and image.content == on_s3.objects[on_s3.image_id]


def test_s3_media_outside_the_roots_is_refused(client, on_s3):
    assert ItemStore(on_s3.cfg.store).get([PRIVATE_ID], ["media_uri"])["media_uri"][0].as_py().endswith("secret.mp4")
    refused = client.get(f"/media/{PRIVATE_ID}", headers={"Range": "bytes=0-99"})
    assert refused.status_code == 403 and "outside the media roots" in refused.text
    assert on_s3.objects[on_s3.video_id][:100] not in refused.content
    page = client.get(f"/items/{PRIVATE_ID}")
    assert "The media is not shown" in page.text and "<video" not in page.text
    assert client.get(f"/thumbs/{PRIVATE_ID}").headers["content-type"] == "image/svg+xml"
