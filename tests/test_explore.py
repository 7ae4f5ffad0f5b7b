"""The explorer over a real store (synthetic demo catalog, real MiniLM vectors, real quantize and training runs),
through Starlette's ASGI test client: every route, media confinement, Range requests, escaping, the token gate,
and that nothing is written to the store. The real MicroLens videos are served too when ../shared/data is here."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import quote_plus

import pandas as pd
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from extractors.embed import text_model_id
from jobs.cli import app as cli
from jobs.explore import ExploreError, build_app, serve
from jobs.ingest import run_ingest
from pipeline.config import validate_config
from pipeline.store import ItemStore
from recommenders.serve import Server
from tests.explore_store import (
    ATTRIBUTE_TITLE,
    FAILED_ID,
    HOSTILE_AUDIO_DESCRIPTION,
    HOSTILE_DESCRIPTION,
    OUTSIDE_ID,
    SCRIPT_TITLE,
    SILENT_ID,
    SYMLINK_ID,
    TRANSCRIPT,
    audio_prompt_id,
    build_explore_store,
)
from tests.helpers import require_shared


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_explore_store(tmp_path_factory.mktemp("explore"))


@pytest.fixture(scope="module")
def client(built):
    return TestClient(build_app(built.cfg, [built.compare_dir, built.ablation_dir]))


def store_files(built) -> dict[str, float]:
    root = Path(built.cfg.store.uri)
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def test_catalog_pages_counts_and_filters(client, built):
    page = client.get("/")
    assert page.status_code == 200
    assert "26 items" in page.text and re.search(r"\d+ video", page.text) and re.search(r"\d+ image", page.text)
    assert page.text.count('class="card') == 24  # one page
    second = client.get("/?page=1")
    assert second.text.count('class="card') == 2 and "page 2 of 2" in second.text
    videos = client.get("/", params={"where": "media_type = video"})
    assert videos.status_code == 200
    assert "image ·" not in videos.text and "<span class=\"kind\">image" not in videos.text
    bad = client.get("/", params={"where": "media_type ~ video"})
    assert bad.status_code == 400 and "cannot read filter" in bad.text


def test_text_search_uses_the_store_encoder_and_filters(client):
    hits = client.get("/", params={"q": "calm blue ocean waves"})
    assert hits.status_code == 200 and "nearest items to" in hits.text
    distances = [float(d) for d in re.findall(r"distance (\d\.\d+)", hits.text)]
    assert len(distances) == 26 and distances == sorted(distances)
    images = client.get("/", params={"q": "calm blue ocean waves", "where": "media_type = image"})
    assert '<span class="kind">video' not in images.text and "distance" in images.text
    bad = client.get("/", params={"q": "ocean", "where": "no_such_column = 1"})
    assert bad.status_code == 400 and "unknown column" in bad.text


def test_item_page_shows_descriptions_errors_semantic_ids_and_neighbours(client, built):
    page = client.get(f"/items/{built.video_id}")
    assert page.status_code == 200
    assert f'src="/media/{built.video_id}"' in page.text and "<video" in page.text
    assert "tiny-qwen2-vl@test" in page.text and "prompt video-v1" in page.text
    assert "Nearest by text_vec" in page.text and page.text.count("distance 0.") >= 8
    assert "semantic_id: (" in page.text and "prefix (" in page.text
    failed = client.get(f"/items/{FAILED_ID}")
    assert "<b>description</b> failed for this item: the model ran out of memory" in failed.text
    missing = client.get("/items/no-such-item")
    assert missing.status_code == 404 and "there is no item" in missing.text


def test_item_page_shows_the_transcript_and_the_audio_description(client, built):
    page = client.get(f"/items/{built.video_id}").text
    transcript = re.search(r'id="text-transcript">(.*?)</div>', page, re.S).group(1)
    assert f'<p class="body">{TRANSCRIPT}</p>' in transcript
    assert "model faster-whisper:large-v3:transcribe:detect" in transcript and "· language en ·" in transcript
    assert 'class="text transcript"' in page and 'class="text description" id="text-audio_description"' in page
    sound = re.search(r'id="text-audio_description">(.*?)</div>', page, re.S).group(1)
    assert HOSTILE_AUDIO_DESCRIPTION not in page and "window.__pwned = 5</script>" not in page
    assert ('<p class="body">&lt;script&gt;window.__pwned = 5&lt;/script&gt;waves&#34;&gt;&lt;img src=x '
            'onerror=&#34;window.__pwned = 6&#34;&gt;</p>') in sound
    assert f"model Qwen/Qwen2-Audio-7B-Instruct · prompt {audio_prompt_id(built.cfg)} ·" in sound
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/explore.js" defer>']
    silent = client.get(f"/items/{SILENT_ID}").text
    assert "<b>transcript</b> was skipped: no audio stream" in silent
    assert "<b>audio_description</b> was skipped: no audio stream" in silent
    assert silent.count("none: skipped (no audio stream)") == 2
    image = client.get(f"/items/{built.hostile_ids[0]}").text  # an image: neither stage wrote to it
    assert re.search(r'id="text-transcript">\s*<h3>transcript</h3>\s*<p class="note">not written yet', image)


def test_every_text_is_escaped(client, built):
    page = client.get(f"/items/{built.hostile_ids[0]}")
    raw = page.text
    assert SCRIPT_TITLE not in raw and "<script>window" not in raw
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in raw
    assert HOSTILE_DESCRIPTION not in raw and "<img src=x" not in raw
    catalog = client.get("/").text
    assert ATTRIBUTE_TITLE not in catalog and "<img src=x" not in catalog
    # Scripts may come only from the app itself, so even an escaping slip could not run one.
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert re.findall(r"<script[^>]*>", raw) == ['<script src="/static/explore.js" defer>']


def test_media_is_served_with_ranges(client, built):
    uri = ItemStore(built.cfg.store).get([built.video_id], ["media_uri"])["media_uri"][0].as_py()
    data = Path(uri).read_bytes()
    whole = client.get(f"/media/{built.video_id}")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
    part = client.get(f"/media/{built.video_id}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(f"/media/{built.video_id}", headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    open_end = client.get(f"/media/{built.video_id}", headers={"Range": f"bytes={len(data) - 10}-"})
    assert open_end.content == data[-10:]
    beyond = client.get(f"/media/{built.video_id}", headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    ignored = client.get(f"/media/{built.video_id}", headers={"Range": "bytes=9-3"})  # unreadable: RFC 9110 ignores
    assert ignored.status_code == 200 and ignored.content == data


def byteranges(response) -> list[tuple[dict, bytes]]:
    """The parts of a multipart/byteranges body: (headers, bytes) each, checked to be framed as RFC 9110 says."""
    kind, _, boundary = response.headers["content-type"].partition("; boundary=")
    assert kind == "multipart/byteranges" and boundary
    body = response.content
    assert int(response.headers["content-length"]) == len(body) and body.endswith(f"--{boundary}--\r\n".encode())
    parts = []
    for chunk in body.split(f"--{boundary}".encode())[1:-1]:
        head, _, payload = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        assert payload.endswith(b"\r\n")
        parts.append((dict(line.split(": ", 1) for line in head.decode().split("\r\n")), payload[:-2]))
    return parts


def test_several_ranges_are_answered_with_multipart_byteranges(client, built):
    uri = ItemStore(built.cfg.store).get([built.video_id], ["media_uri"])["media_uri"][0].as_py()
    data = Path(uri).read_bytes()
    size = len(data)
    # Parts come in the order asked; overlapping and touching ranges become one part; unsatisfiable ones drop out.
    asked = f"bytes=500-599, 0-99, 50-149, 150-160, -10, {size + 5}-"
    response = client.get(f"/media/{built.video_id}", headers={"Range": asked})
    assert response.status_code == 206 and "content-range" not in response.headers
    parts = byteranges(response)
    assert [p[0]["Content-Range"] for p in parts] == [f"bytes 500-599/{size}", f"bytes 0-160/{size}",
                                                      f"bytes {size - 10}-{size - 1}/{size}"]
    assert [p[1] for p in parts] == [data[500:600], data[:161], data[-10:]]
    assert {p[0]["Content-Type"] for p in parts} == {"video/mp4"}
    merged = client.get(f"/media/{built.video_id}", headers={"Range": "bytes=0-9,10-19"})  # one range after merging
    assert merged.status_code == 206 and merged.headers["content-range"] == f"bytes 0-19/{size}"
    assert merged.content == data[:20]
    many = ",".join(f"{i * 10}-{i * 10}" for i in range(40))  # more parts than served: the whole file instead
    assert client.get(f"/media/{built.video_id}", headers={"Range": f"bytes={many}"}).content == data
    none = client.get(f"/media/{built.video_id}", headers={"Range": f"bytes={size}-,-0"})
    assert none.status_code == 416


@pytest.mark.parametrize("path", ["/media/../../etc/passwd", "/media/..%2F..%2Fetc%2Fpasswd", "/media//etc/passwd",
                                  "/media/%2Fetc%2Fpasswd", "/thumbs/..%2F..%2Fetc%2Fpasswd"])
def test_media_urls_name_items_never_paths(client, path):
    response = client.get(path)
    assert response.status_code == 404 and "root:" not in response.text
    # `..` segments are resolved by the client before they are sent, so that URL asks for /etc/passwd: no route.
    assert "there is no item" in response.text or "/.." in path


def test_media_outside_the_roots_is_refused(client, built):
    outside = client.get(f"/media/{OUTSIDE_ID}")  # an absolute path the store holds, outside media.roots
    assert outside.status_code == 403 and "outside the media roots" in outside.text
    symlink = client.get(f"/media/{SYMLINK_ID}")  # inside the root, but a symlink to a file outside it
    assert symlink.status_code == 403 and "outside the media roots" in symlink.text
    page = client.get(f"/items/{SYMLINK_ID}")
    assert "The media is not shown" in page.text and "<video" not in page.text
    assert client.get(f"/thumbs/{OUTSIDE_ID}").headers["content-type"] == "image/svg+xml"
    assert built.secret.read_bytes() not in client.get(f"/thumbs/{SYMLINK_ID}").content


def test_thumbnails_are_cached_beside_the_store(client, built):
    response = client.get(f"/thumbs/{built.video_id}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content[:2] == b"\xff\xd8"
    store = Path(built.cfg.store.uri).resolve()
    cache = store.with_name(f"{store.name}.explore-cache")
    assert [p.read_bytes() for p in cache.glob("*.jpg")].count(response.content) == 1
    assert client.get(f"/thumbs/{built.video_id}").content == response.content
    image = next(i for i in ItemStore(built.cfg.store).scan(["item_id", "media_type"]).to_pylist()
                 if i["media_type"] == "image")
    assert client.get(f"/thumbs/{image['item_id']}").headers["content-type"] == "image/jpeg"


def test_users_recommendations_and_a_new_user(client, built):
    listing = client.get("/users", params={"run": "compare/sasrec"})
    assert listing.status_code == 200 and "compare/popularity" in listing.text
    user = re.search(r'href="/user\?run=compare%2Fsasrec&amp;id=([^"]+)"', listing.text).group(1)
    page = client.get("/user", params={"run": "compare/sasrec", "id": user})
    assert page.status_code == 200
    history = re.search(r'id="history">(.*?)</div>\s*<h2>', page.text, re.S).group(1)
    recommended = re.search(r'id="recommended">(.*?)</div>', page.text, re.S).group(1)
    shown = set(re.findall(r'href="/items/([^"]+)"', recommended))
    assert len(re.findall(r"score -?\d+\.\d{4}", recommended)) == len(shown) > 0
    assert not shown & set(re.findall(r'href="/items/([^"]+)"', history))  # history masked
    # The synthetic catalog's extra rows were never interacted with: popularity ranks them, marked.
    popular = client.get("/recommend", params={"run": "compare/popularity", "items": f"{built.video_id}"})
    assert popular.status_code == 200 and "never in training" in popular.text
    new = client.get("/recommend", params={"run": "compare/sasrec", "items": f"{built.video_id}, {FAILED_ID}"})
    assert new.status_code == 200 and "A new user" in new.text
    partly = client.get("/recommend", params={"run": "compare/sasrec", "items": f"{built.video_id} nope"})
    assert partly.status_code == 200 and "left out of the ranking: nope" in partly.text
    unknown = client.get("/recommend", params={"run": "compare/sasrec", "items": "nope"})
    assert unknown.status_code == 400 and "none of the history&#39;s items is in run sasrec" in unknown.text
    nobody = client.get("/user", params={"run": "compare/sasrec", "id": "nobody"})
    assert nobody.status_code == 400 and "user &#39;nobody&#39; is not in run sasrec" in nobody.text
    assert client.get("/user", params={"run": "elsewhere", "id": user}).status_code == 400
    assert client.get("/user", params={"run": "compare/bpr", "id": user}).status_code == 200
    by_embedding = client.get("/recommend", params={"run": "compare/bpr", "items": built.video_id})
    assert by_embedding.status_code == 400 and "cannot rank a new user" in by_embedding.text


def test_the_user_pages_are_seerec_recommend(client, built):
    """The page shows what `Server` (the class behind `seerec recommend`) ranks, scores included, and marks
    exactly the items outside the run's trained_items.json."""
    run = built.compare_dir / "sasrec"
    server = Server.from_run(run)
    user = str(server.user_ids[0])
    expected = server.for_user(user, 20).to_pylist()
    page = client.get("/user", params={"run": "compare/sasrec", "id": user}).text
    recommended = re.search(r'id="recommended">(.*?)</div>', page, re.S).group(1)
    shown = re.findall(r'href="/items/([^"]+)".*?score (-?\d+\.\d{4})( · never in training)?', recommended, re.S)
    assert [(i, float(s)) for i, s, _ in shown] == [(r["item_id"], round(r["score"], 4)) for r in expected]
    trained = set(json.loads((run / "trained_items.json").read_text()))
    assert trained < set(json.loads((run / "items.json").read_text())) and OUTSIDE_ID not in trained
    assert all(bool(never) == (i not in trained) for i, _, never in shown)


def test_a_run_folder_without_trained_items_still_serves_with_a_note(built, tmp_path):
    old = tmp_path / "old-run"
    shutil.copytree(built.compare_dir / "popularity", old)
    (old / "trained_items.json").unlink()
    client = TestClient(build_app(built.cfg, [old], load_encoder=False))
    page = client.get("/recommend", params={"run": "old-run", "items": built.video_id})
    assert page.status_code == 200 and "written before seerec recorded which items" in page.text
    assert "score " in page.text and "· never in training" not in page.text


def run_section(page: str, name: str) -> str:
    return re.search(rf'<section class="run"><h2>{name}</h2>(.*?)</section>', page, re.S).group(1)


def test_runs_page_tables_and_plots(client):
    page = client.get("/runs")
    assert page.status_code == 200
    compare = run_section(page.text, "compare")
    assert "<th>valid_ndcg@10</th>" in compare and "<td>sasrec</td>" in compare
    assert "history masked" in compare and "test_unmasked.ndcg@10" in compare
    plots = re.findall(r'<img src="(/plot\?[^"]+)"', compare)
    assert len(plots) == 4  # compare.png and each run's curve.png
    png = client.get(plots[0].replace("&amp;", "&"))
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/plot", params={"run": "compare", "file": "../compare.md"}).status_code == 404
    assert client.get("/plot", params={"run": "compare", "file": "sasrec/model.json"}).status_code == 404


def test_an_ablation_folder_shows_its_table_plot_and_cell_runs(client, built):
    section = run_section(client.get("/runs").text, "ablation")
    assert "<h3>ablation.md</h3>" in section
    assert "<tr><th>features</th><th>content_knn</th><th>popularity</th></tr>" in section
    cells = pd.read_csv(built.ablation_dir / "ablation.csv").set_index("model")
    ids = cells.loc["popularity"]
    assert f"<td>ID only</td><td>-</td><td>{ids['masked_recall@10']:.4f} / {ids['masked_ndcg@10']:.4f}</td>" in section
    assert re.search(r"<td>text_vec</td><td>\d\.\d{4} / \d\.\d{4}</td><td>-</td>", section)
    cell_runs = ["leave-one-out/ids/popularity", "leave-one-out/text_vec/content_knn"]  # three levels down
    assert re.findall(r"<summary>metrics.json of ([^<]+)</summary>", section) == cell_runs
    plots = [p.replace("&amp;", "&") for p in re.findall(r'<img src="(/plot\?[^"]+)"', section)]
    assert plots == ["/plot?run=ablation&file=ablation.png",
                     *(f"/plot?run=ablation&file={quote_plus(r + '/curve.png')}" for r in cell_runs)]
    png = client.get(plots[0])
    assert png.content == (built.ablation_dir / "ablation.png").read_bytes() and png.content[:4] == b"\x89PNG"
    # The cells are runs of the user pages too, served as `seerec recommend` serves them.
    listing = client.get("/users").text
    assert all(f'<option value="ablation/{r}"' in listing for r in cell_runs)
    run = f"ablation/{cell_runs[1]}"
    assert client.get("/users", params={"run": run}).status_code == 200
    page = client.get("/recommend", params={"run": run, "items": built.video_id}).text
    shown = re.findall(r'href="/items/([^"]+)"', re.search(r'id="recommended">(.*?)</div>', page, re.S).group(1))
    expected = Server.from_run(built.ablation_dir / cell_runs[1]).for_history([built.video_id], 20).to_pylist()
    assert shown == [r["item_id"] for r in expected if r["note"] is None] and shown


def test_stages_page_counts_and_versions(client, built):
    page = client.get("/stages")
    assert page.status_code == 200
    row = re.search(r"<tr><td>description</td><td>(\d+)</td><td>(\d+)</td>", page.text)
    assert row.groups() == ("25", "1")
    assert "tiny-qwen2-vl@test: 25" in page.text and "quantize-semantic_id-" in page.text
    version = ItemStore(built.cfg.store).table.version
    assert f"version {version}" in page.text


def test_the_app_never_writes_to_the_store(built):
    before, version = store_files(built), ItemStore(built.cfg.store).table.version
    client = TestClient(build_app(built.cfg, [built.compare_dir]))
    for url in ["/", "/?q=ocean", f"/items/{built.video_id}", f"/media/{built.video_id}", f"/thumbs/{built.video_id}",
                "/stages", "/runs", "/users"]:
        assert client.get(url).status_code == 200
    assert store_files(built) == before and ItemStore(built.cfg.store).table.version == version


def test_the_token_guards_every_request(built):
    client = TestClient(build_app(built.cfg, [], token="s3cret", load_encoder=False))
    for url in ["/", f"/items/{built.video_id}", f"/media/{built.video_id}", "/static/style.css"]:
        assert client.get(url).status_code == 401
    assert client.get("/", params={"token": "wrong"}).status_code == 401
    entered = client.get("/", params={"token": "s3cret"})
    assert entered.status_code == 200 and "HttpOnly" in entered.headers["set-cookie"]
    assert client.get(f"/media/{built.video_id}").status_code == 200  # the cookie carries it now
    bearer = TestClient(build_app(built.cfg, [], token="s3cret", load_encoder=False))
    assert bearer.get("/stages", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert bearer.get("/stages", headers={"Authorization": "Bearer s3cre"}).status_code == 401


def test_an_exposed_address_needs_a_token(built, monkeypatch):
    with pytest.raises(ExploreError, match="needs|expose"):
        serve(built.cfg, [], host="0.0.0.0")
    monkeypatch.delenv("SEEREC_EXPLORE_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["explore", "--host", "0.0.0.0", f"store.uri={built.cfg.store.uri}",
                                      f"media.roots=[{built.cfg.media.roots[0]}]"])
    assert result.exit_code == 2 and "would expose the store" in result.output
    assert CliRunner().invoke(cli, ["explore", "--help"]).exit_code == 0


def test_a_missing_store_or_roots_is_one_sentence(tmp_path):
    with pytest.raises(Exception, match="there is no item store"):
        build_app(validate_config({"store": {"uri": str(tmp_path / "none")}, "media": {"roots": [str(tmp_path)]}}))


def test_real_microlens_videos(tmp_path):
    folder = require_shared("microlens-sample")
    titles = {}
    for line in (folder / "MicroLens-100k_title_en.csv").read_text(encoding="utf-8").splitlines():
        video_id, _, title = line.partition(",")
        titles[video_id.strip()] = title.strip()
    videos = sorted((folder / "videos").glob("*.mp4"))
    manifest = tmp_path / "catalog.csv"
    pd.DataFrame([{"item_id": v.stem, "media_uri": str(v.resolve()), "media_type": "video",
                   "title": titles.get(v.stem, "")} for v in videos]).to_csv(manifest, index=False)
    cfg = validate_config({"store": {"uri": str(tmp_path / "store")}, "ingest": {"path": str(manifest)},
                           "media": {"roots": [str(folder.resolve())]}})
    run_ingest(cfg)
    client = TestClient(build_app(cfg, [], cache_dir=tmp_path / "thumbs", load_encoder=False))
    assert "3 video" in client.get("/").text
    for video in videos:
        page = client.get(f"/items/{video.stem}")
        assert page.status_code == 200 and "<video" in page.text
        size = video.stat().st_size
        part = client.get(f"/media/{video.stem}", headers={"Range": "bytes=0-1023"})
        assert part.status_code == 206 and part.headers["content-range"] == f"bytes 0-1023/{size}"
        assert part.content == video.read_bytes()[:1024]
        thumb = client.get(f"/thumbs/{video.stem}")
        assert thumb.headers["content-type"] == "image/jpeg"  # a keyframe of the HEVC video, by seerec's decoder


def test_search_is_off_with_the_reason_when_another_model_embedded_the_column(built):
    other = built.cfg.model_copy(update={"embed": built.cfg.embed.model_copy(update={
        "text": built.cfg.embed.text.model_copy(update={"model": "sentence-transformers/other"})})})
    client = TestClient(build_app(other, []))
    page = client.get("/")
    assert "Text search is off" in page.text
    assert f"was embedded by {text_model_id(built.cfg.embed.text)}" in page.text
    refused = client.get("/", params={"q": "ocean"})
    assert refused.status_code == 400 and "text search is off" in refused.text


def test_text_query_encoder_embeds_clip_text_for_an_image_column(make_config):
    """The explorer keeps one text_query_encoder; for a CLIP column it embeds text with CLIP's text tower."""
    import numpy as np
    import pyarrow as pa

    from extractors.embed import ClipEmbedder, clip_model_id
    from extractors.search import text_query_encoder, text_query_vector
    from pipeline.schema import catalog_schema, vector_family

    cfg = make_config()
    store = ItemStore(cfg.store)
    store.create_if_missing()
    schema = catalog_schema()
    store.upsert(pa.table({name: (["a", "b"] if name == "item_id" else [None, None]) for name in schema.names},
                          schema=schema))
    frames = [np.full((1, 32, 32, 3), value, np.uint8) for value in (0, 255)]  # a black and a white picture
    vectors = ClipEmbedder(cfg.embed.image).embed_items(frames)
    family = vector_family("clip_vec")
    batch = {"item_id": np.array(["a", "b"], dtype=object), "vector": vectors, "error": np.full(2, None, dtype=object)}
    rows = family.batch_rows(batch, "vector", clip_model_id(cfg.embed.image), source="frames")
    store.write_family(family.of_rows(rows), rows)
    encode = text_query_encoder(store, cfg, "clip_vec")
    vector = encode("a white picture")
    assert vector.shape == (vectors.shape[1],) and np.isclose(np.linalg.norm(vector), 1.0, atol=1e-4)
    assert np.allclose(vector, text_query_vector(store, cfg, "clip_vec", "a white picture"), atol=1e-5)
    assert store.search_vector("clip_vec", vector, 2).num_rows == 2


def test_store_info_counts_what_the_stages_page_counts(built):
    """`seerec store info` and the stages page share ItemStore.stage_counts."""
    result = CliRunner().invoke(cli, ["store", "info", f"store.uri={built.cfg.store.uri}"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert re.search(r"description\s*│\s*25\s*│\s*1\s*│", result.output)
    counts = {row["column"]: row for row in ItemStore(built.cfg.store).stage_counts()}
    assert counts["description"]["pending"] == 0 and counts["ingest"]["filled"] is None
    assert counts["semantic_id"]["models"] and sum(counts["text_vec"]["models"].values()) == 26
