"""Tests for pipeline.media: frame sampling, both video backends, images, and per-item error records."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pipeline import media
from pipeline.config import MediaConfig
from pipeline.media import DecodedMedia, FrameDecoder, MediaError, decode_batch, decode_item, frame_indices
from tests.helpers import SHARED_DATA

MICROLENS = SHARED_DATA / "microlens-sample" / "videos"
REAL_VIDEOS = ["1002", "10034", "10040"]
BACKENDS = [
    pytest.param("decord", marks=pytest.mark.skipif(media.decord is None, reason="decord is not installed")),
    "pyav",
]

# The tiny test video: frame i is a flat grey of level 10 + 10 * i, so a decoded frame tells its index.
TINY_FRAMES, TINY_FPS, TINY_SIZE = 24, 12, (160, 96)


def _real_video(name: str) -> Path:
    path = MICROLENS / f"{name}.mp4"
    if not path.is_file():
        pytest.skip(f"../shared/data/microlens-sample is absent: {path} not found")
    return path


def _write_video(path: Path, num_frames: int) -> Path:
    width, height = TINY_SIZE
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=TINY_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        container.start_encoding()  # so that a zero-frame file is still written
        for i in range(num_frames):
            rgb = np.full((height, width, 3), 10 + 10 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def _grey_index(frames: np.ndarray) -> list[int]:
    """Recover each frame's source index from its grey level."""
    return [round((float(frame.mean()) - 10) / 10) for frame in frames]


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory) -> Path:
    return _write_video(tmp_path_factory.mktemp("video") / "tiny.mp4", TINY_FRAMES)


# ---------------------------------------------------------------------------------------- frame_indices


def test_uniform_takes_the_centre_of_each_segment():
    # 100 frames in 8 segments of 12.5 frames: centres at 6.25, 18.75, 31.25, ...
    expected = [6, 18, 31, 43, 56, 68, 81, 93]
    assert frame_indices(100, 30.0, MediaConfig(num_frames=8)).tolist() == expected


def test_uniform_never_asks_for_more_frames_than_exist():
    assert frame_indices(5, 30.0, MediaConfig(num_frames=8)).tolist() == [0, 1, 2, 3, 4]
    assert frame_indices(1, 30.0, MediaConfig(num_frames=8)).tolist() == [0]
    assert frame_indices(0, 30.0, MediaConfig()).tolist() == []


def test_fps_mode_takes_one_frame_per_period():
    # 982 frames at 60 fps (16.4 s), 1 frame/s: t = 0, 1, ..., 16 s -> frames 0, 60, ..., 960.
    cfg = MediaConfig(sampling="fps", fps=1.0, max_frames=32)
    assert frame_indices(982, 60.0, cfg).tolist() == list(range(0, 961, 60))
    # A non-integer period floors each time: 29.97 fps, 100 frames -> 0, 29.97, 59.94, 89.91.
    assert frame_indices(100, 29.97, cfg).tolist() == [0, 29, 59, 89]


def test_fps_mode_is_thinned_uniformly_to_max_frames():
    # 862 frames at 30 fps, 1 frame/s: 29 candidates 0, 30, ..., 840. Centres of 4 segments of 29:
    # 3.625, 10.875, 18.125, 25.375 -> candidates 3, 10, 18, 25 -> frames 90, 300, 540, 750.
    cfg = MediaConfig(sampling="fps", fps=1.0, max_frames=4)
    assert frame_indices(862, 30.0, cfg).tolist() == [90, 300, 540, 750]


def test_fps_mode_on_a_short_clip():
    assert frame_indices(10, 30.0, MediaConfig(sampling="fps", fps=1.0)).tolist() == [0]
    assert frame_indices(20, 30.0, MediaConfig(sampling="fps", fps=2.0)).tolist() == [0, 15]
    # Asking for more frames per second than the source has gives every frame once.
    assert frame_indices(5, 2.0, MediaConfig(sampling="fps", fps=10.0)).tolist() == [0, 1, 2, 3, 4]


def test_fps_mode_with_unknown_source_fps_falls_back_to_uniform():
    cfg = MediaConfig(sampling="fps", max_frames=4)
    assert frame_indices(100, 0.0, cfg).tolist() == [12, 37, 62, 87]


# ---------------------------------------------------------------------------------------- videos


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_video_gives_the_expected_frames(tiny_video, backend):
    decoded = media.decode_video(str(tiny_video), MediaConfig(num_frames=8, max_side=64), backend=backend)
    assert isinstance(decoded, DecodedMedia)
    assert decoded.frames.shape == (8, 38, 64, 3)  # 160x96 scaled to a longer side of 64
    assert decoded.frames.dtype == np.uint8
    expected = [1, 4, 7, 10, 13, 16, 19, 22]  # 24 frames in 8 segments of 3
    assert _grey_index(decoded.frames) == expected
    assert decoded.fps == TINY_FPS
    assert decoded.timestamps.dtype == np.float32
    np.testing.assert_allclose(decoded.timestamps, np.array(expected) / TINY_FPS, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_video_fps_mode_and_no_upscaling(tiny_video, backend):
    cfg = MediaConfig(sampling="fps", fps=4.0, max_frames=32, max_side=448)
    decoded = media.decode_video(f"file://{tiny_video}", cfg, backend=backend)
    assert decoded.frames.shape == (8, 96, 160, 3)  # smaller than max_side: left as it is
    assert _grey_index(decoded.frames) == [0, 3, 6, 9, 12, 15, 18, 21]
    np.testing.assert_allclose(decoded.timestamps, np.arange(8) * 0.25, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_odd_target_sizes(tiny_video, backend):
    decoded = media.decode_video(str(tiny_video), MediaConfig(num_frames=2, max_side=45), backend=backend)
    assert decoded.frames.shape == (2, 27, 45, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_remote_uris_are_read_into_memory(tiny_video, monkeypatch, backend):
    # Route file:// through pyarrow.fs, the path that s3://, gs:// and http URIs take.
    monkeypatch.setattr(media, "_LOCAL_SCHEMES", ("",))
    decoded = media.decode_video(f"file://{tiny_video}", MediaConfig(num_frames=3), backend=backend)
    assert _grey_index(decoded.frames) == [4, 12, 20]
    with pytest.raises(MediaError, match="is missing"):
        media.decode_video(f"file://{tiny_video}.gone", MediaConfig(), backend=backend)


@pytest.fixture(scope="module")
def real_decoded():
    """Each real video decoded once per backend with the default config (8 frames, max_side 448)."""
    cache: dict[tuple[str, str], DecodedMedia] = {}

    def get(name: str, backend: str) -> DecodedMedia:
        if (name, backend) not in cache:
            cache[name, backend] = media.decode_video(str(_real_video(name)), MediaConfig(), backend=backend)
        return cache[name, backend]

    return get


@pytest.mark.parametrize("name", REAL_VIDEOS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_real_video_shape_and_times(real_decoded, name, backend):
    decoded = real_decoded(name, backend)
    frames = decoded.frames
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[0] == 8 and frames.shape[3] == 3
    assert max(frames.shape[1:3]) <= 448
    assert frames.shape[1:3] == (252, 448)  # 1280x720 keeps its aspect ratio
    assert np.all(np.diff(decoded.timestamps) > 0)
    assert decoded.fps in (30.0, 60.0)
    assert frames.std() > 10  # real content, not a blank frame


@pytest.mark.skipif(media.decord is None, reason="decord is not installed")
@pytest.mark.parametrize("name", REAL_VIDEOS)
def test_real_video_backends_agree(real_decoded, name):
    by_decord, by_pyav = real_decoded(name, "decord"), real_decoded(name, "pyav")
    assert by_decord.frames.shape == by_pyav.frames.shape
    np.testing.assert_array_equal(by_decord.timestamps, by_pyav.timestamps)
    diff = np.abs(by_decord.frames.astype(np.int16) - by_pyav.frames.astype(np.int16))
    assert diff.mean() < 3.0  # the same frames; only colour conversion rounding differs


# ---------------------------------------------------------------------------------------- images


def test_image_is_rgb_on_white_and_downscaled(tmp_path):
    path = tmp_path / "rgba.png"
    Image.new("RGBA", (300, 200), (255, 0, 0, 128)).save(path)
    decoded = media.load_image(str(path), MediaConfig(max_side=100))
    assert decoded.frames.shape == (1, 67, 100, 3)
    assert decoded.frames.dtype == np.uint8
    assert decoded.timestamps.tolist() == [0.0] and decoded.fps == 0.0
    assert decoded.frames[0, 30, 50].tolist() == [255, 127, 127]  # half-transparent red on white


def test_small_greyscale_image_is_not_upscaled(tmp_path):
    path = tmp_path / "grey.jpg"
    Image.new("L", (40, 30), 128).save(path)
    decoded = decode_item(str(path), "image", MediaConfig())
    assert decoded.frames.shape == (1, 30, 40, 3)


def test_decompression_bomb_guard_is_set_per_call(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(path)
    expected = f"image {path} exceeds the 1000000-pixel limit (decompression bomb guard)"
    with pytest.raises(MediaError) as excinfo:
        media.load_image(str(path), MediaConfig(max_image_pixels=1_000_000))
    assert str(excinfo.value) == expected
    # Between the limit and twice it, PIL only warns; the guard must still refuse.
    with pytest.raises(MediaError, match="exceeds the 5000000-pixel limit"):
        media.load_image(str(path), MediaConfig(max_image_pixels=5_000_000))
    # A later call with a higher limit is not affected by the earlier ones.
    assert media.load_image(str(path), MediaConfig(max_side=64)).frames.shape == (1, 64, 64, 3)


# ---------------------------------------------------------------------------------------- error records


def test_missing_and_empty_files(tmp_path):
    missing = tmp_path / "gone.mp4"
    with pytest.raises(MediaError) as excinfo:
        decode_item(str(missing), "video", MediaConfig())
    assert str(excinfo.value) == f"video {missing} is missing"
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(MediaError) as excinfo:
        decode_item(str(empty), "image", MediaConfig())
    assert str(excinfo.value) == f"file {empty} is empty"


@pytest.mark.parametrize("uri", ["/dev/zero", "/dev/null", "/tmp"])
def test_devices_and_folders_are_not_regular_files(uri):
    with pytest.raises(MediaError) as excinfo:
        decode_item(uri, "video", MediaConfig())
    assert str(excinfo.value) == f"video {uri} is not a regular file"


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(MediaError, match="is not a regular file"):
        decode_item(str(fifo), "video", MediaConfig())


def test_a_symlink_loop_is_an_error_record(tmp_path):
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    with pytest.raises(MediaError, match="loop.mp4 cannot be resolved"):
        decode_item(str(loop), "video", MediaConfig())
    with pytest.raises(MediaError, match="loop.mp4 cannot be resolved"):
        decode_item(str(loop), "video", MediaConfig(roots=[str(tmp_path)]))


# ---------------------------------------------------------------------------------------- media roots
@pytest.fixture
def rooted(tmp_path, tiny_video) -> tuple[Path, MediaConfig]:
    """A media folder holding the tiny video, a symlink out of it, and a config confined to it."""
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "tiny.mp4").write_bytes(tiny_video.read_bytes())
    (folder / "out.mp4").symlink_to(tiny_video)
    return folder, MediaConfig(num_frames=2, max_side=32, roots=[str(folder)])


def test_decoder_reads_inside_the_roots(rooted):
    folder, cfg = rooted
    assert decode_item(str(folder / "tiny.mp4"), "video", cfg).frames.shape[0] == 2
    assert decode_item(f"file://{folder}/tiny.mp4", "video", cfg).frames.shape[0] == 2


@pytest.mark.parametrize("uri", ["{tiny}", "{folder}/out.mp4", "{folder}/../../../../etc/hostname", "/etc/shadow",
                                 "file:///etc/hostname"])
def test_decoder_refuses_local_paths_outside_the_roots(rooted, tiny_video, uri):
    folder, cfg = rooted
    uri = uri.format(tiny=tiny_video, folder=folder)
    with pytest.raises(MediaError) as excinfo:
        decode_item(uri, "video", cfg)
    assert str(excinfo.value) == f"media_uri {uri} is outside the media roots ({folder}); add its folder to media.roots"


@pytest.mark.parametrize("uri", ["http://169.254.169.254/latest/meta-data/", "s3://bucket/a.mp4",
                                 "HTTPS://example.com/a.jpg"])
def test_decoder_refuses_remote_uris_unless_a_root_allows_them(uri):
    scheme = uri.split(":")[0].lower()
    with pytest.raises(MediaError, match=f"is a remote {scheme}:// URI and media.roots names no {scheme}:// prefix"):
        decode_item(uri, "image", MediaConfig())


def test_a_remote_root_lets_its_prefix_through_and_nothing_else():
    cfg = MediaConfig(roots=["nosuchfs://bucket/videos/"])
    # Past the roots check, the unknown scheme fails in pyarrow.fs: proof that the root let it through.
    with pytest.raises(MediaError, match="could not be read"):
        decode_item("nosuchfs://bucket/videos/a.mp4", "video", cfg)
    for refused in ("nosuchfs://bucket/videos-private/a.mp4", "nosuchfs://bucket/videos/../secret.mp4",
                    "nosuchfs://bucket/videos/%2e%2e/secret.mp4", "nosuchfs://other/videos/a.mp4"):
        with pytest.raises(MediaError, match="outside the media roots|'..' segment"):
            decode_item(refused, "video", cfg)


def test_decode_batch_records_a_refused_row(rooted):
    folder, cfg = rooted
    batch = {"item_id": np.array(["ok", "bad"]), "media_uri": np.array([str(folder / "tiny.mp4"), "/etc/passwd"]),
             "media_type": np.array(["video", "image"])}
    errors = decode_batch(batch, cfg)["media_error"].tolist()
    assert errors[0] is None and "outside the media roots" in errors[1]


def test_every_stage_decoder_is_confined_to_the_catalog_folder_by_default(rooted, tmp_path):
    """With media.roots empty, the decoders of a stage open only what ingest would have let in."""
    from pipeline.audio import AudioDecoder
    from pipeline.config import validate_config
    from pipeline.stage import decoder_roots

    folder, _ = rooted
    (folder / "sound.wav").write_bytes(b"not read")
    cfg = validate_config({"ingest": {"path": str(folder / "catalog.parquet")}})
    roots = decoder_roots(cfg)
    assert roots == [str(folder.resolve())]
    assert decoder_roots(validate_config({})) == []  # no catalog named: local files only, never remote
    assert decoder_roots(validate_config({"media": {"roots": ["/data"]}, "ingest": {"path": "x.csv"}})) == ["/data"]
    batch = {"item_id": np.array(["ok", "out"]), "media_uri": np.array([str(folder / "tiny.mp4"), "/etc/hostname"]),
             "media_type": np.array(["video", "video"])}
    frames = FrameDecoder(cfg.media.model_dump(), roots)(batch)["media_error"].tolist()
    assert frames[0] is None and "/etc/hostname is outside the media roots" in frames[1]
    sound = AudioDecoder(cfg.audio.model_dump(), roots)(batch)["error"].tolist()
    assert "/etc/hostname is outside the media roots" in sound[1] and "outside" not in str(sound[0])


@pytest.mark.parametrize("root", ["", "  ", "/data/../etc", "s3://bucket/../x"])
def test_roots_must_name_a_place_without_climbing(root):
    with pytest.raises(ValueError, match="without '..' segments"):
        MediaConfig(roots=[root])


def test_file_over_the_size_limit(tiny_video):
    with pytest.raises(MediaError, match=r"over the 0.001 MB limit"):
        decode_item(str(tiny_video), "video", MediaConfig(max_file_mb=0.001))


def test_unknown_media_type(tiny_video):
    with pytest.raises(MediaError, match=r"^unknown media_type 'audio'"):
        decode_item(str(tiny_video), "audio", MediaConfig())


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_videos(tmp_path, tiny_video, backend):
    cut_tiny = tmp_path / "cut_tiny.mp4"  # PyAV writes the index (moov) last: this cuts it off
    cut_tiny.write_bytes(tiny_video.read_bytes()[: tiny_video.stat().st_size // 2])
    cuts = [cut_tiny]
    if MICROLENS.is_dir():  # this real file has its index first: the cut leaves a header but no frames
        cut_real = tmp_path / "cut_real.mp4"
        cut_real.write_bytes((MICROLENS / "10034.mp4").read_bytes()[:10_000])
        cuts.append(cut_real)
    for cut in cuts:
        with pytest.raises(MediaError, match=rf"^video {cut} (is truncated|could not be decoded)") as excinfo:
            media.decode_video(str(cut), MediaConfig(), backend=backend)
        assert "\n" not in str(excinfo.value)


@pytest.mark.skipif(not MICROLENS.is_dir(), reason="../shared/data/microlens-sample is absent")
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_a_real_video_is_reported_as_truncated(tmp_path, backend):
    # decord alone would silently sample the half that is there.
    cut = tmp_path / "half.mp4"
    cut.write_bytes((MICROLENS / "10034.mp4").read_bytes()[:800_000])
    with pytest.raises(MediaError, match=r"is truncated: its header lists 227 frames, the file holds \d+"):
        media.decode_video(str(cut), MediaConfig(), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_bytes_and_streamless_files(tmp_path, backend):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError, match=rf"^video {noise} could not be decoded \(InvalidDataError"):
        media.decode_video(str(noise), MediaConfig(), backend=backend)
    empty_container = _write_video(tmp_path / "no_frames.mp4", 0)
    with pytest.raises(MediaError, match="has no video stream|has zero frames"):
        media.decode_video(str(empty_container), MediaConfig(), backend=backend)


def test_corrupt_images(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (0, 128, 255)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:60])
    noise = tmp_path / "noise.png"
    noise.write_bytes(b"not an image at all" * 10)
    for path in (cut, noise):
        with pytest.raises(MediaError, match=rf"^image {path} could not be decoded \("):
            media.load_image(str(path), MediaConfig())


# ---------------------------------------------------------------------------------------- batches


def test_decode_batch_on_a_mixed_batch(tmp_path, tiny_video):
    image = tmp_path / "photo.png"
    Image.new("RGB", (50, 40), (10, 20, 30)).save(image)
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(b"\x00\x01" * 5000)
    missing = tmp_path / "missing.png"
    batch = {
        "item_id": np.array(["a", "b", "c", "d", "e", "f"]),
        "media_uri": np.array([str(tiny_video), str(image), str(missing), str(tiny_video), str(noise), None]),
        "media_type": np.array(["video", "image", "image", "audio", "video", "video"]),
        "title": np.array(["t1", "t2", "t3", "t4", "t5", "t6"]),
    }
    out = decode_batch(batch, MediaConfig(num_frames=4, max_side=64))

    assert out["title"].tolist() == batch["title"].tolist()  # extra columns pass through
    errors = out["media_error"].tolist()
    assert errors[:2] == [None, None]
    assert errors[2] == f"image {missing} is missing"
    assert errors[3].startswith("unknown media_type 'audio'")
    assert errors[4].startswith(f"video {noise} could not be decoded")
    assert errors[5] == "video item has no media_uri (its ingest_error says why)"

    assert out["frames"].dtype == object and len(out["frames"]) == 6
    assert out["frames"][0].shape == (4, 38, 64, 3) and out["frames"][0].dtype == np.uint8
    assert _grey_index(out["frames"][0]) == [3, 9, 15, 21]
    assert out["frames"][1].shape == (1, 40, 50, 3)
    assert out["frame_times"][0].dtype == np.float32 and len(out["frame_times"][0]) == 4
    for i in range(2, 6):
        assert out["frames"][i].shape == (0, 1, 1, 3) and out["frames"][i].dtype == np.uint8
        assert out["frame_times"][i].shape == (0,) and out["frame_times"][i].dtype == np.float32


def test_frame_decoder_accepts_a_config_or_a_dict(tiny_video):
    batch = {
        "item_id": np.array([1]),
        "media_uri": np.array([str(tiny_video)]),
        "media_type": np.array(["video"]),
    }
    for cfg in (MediaConfig(num_frames=2, max_side=32), {"num_frames": 2, "max_side": 32}):
        out = FrameDecoder(cfg)(batch)
        assert out["frames"][0].shape == (2, 19, 32, 3)
        assert out["media_error"].tolist() == [None]
