"""One synthetic item: its media file (a PNG, or an MP4 whose shapes move) and its manifest row."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import av
import numpy as np
from PIL import Image

from jobs.synthetic.frames import HEIGHT, WIDTH, make_background, make_sprites, render_frame
from jobs.synthetic.sound import RATE, make_sound
from jobs.synthetic.topics import GENERIC_WORDS, TOPICS, Topic

FPS = 8
MIN_FRAMES, MAX_FRAMES = 12, 24
SECONDARY_SHARE = 0.3  # items that also show a little of a second topic


@functools.cache
def video_codec() -> str:
    """H.264 where this PyAV build can encode it (smaller, universally decodable), else MPEG-4 part 2."""
    try:
        av.codec.Codec("libx264", "w")
    except ValueError:  # PyAV's UnknownCodecError: this FFmpeg build has no such encoder.
        return "mpeg4"
    return "libx264"


def make_item(media: Path, item_id: str, topic_index: int, video: bool, rng: np.random.Generator) -> dict:
    """Render one item's media file and return its manifest row."""
    topic = TOPICS[topic_index]
    secondary = None
    if rng.random() < SECONDARY_SHARE:
        secondary = TOPICS[(topic_index + int(rng.integers(1, len(TOPICS)))) % len(TOPICS)]
    sprites = make_sprites(rng, topic, secondary)
    background = make_background(rng, topic)
    metadata = {
        "topic": topic.name,
        "secondary_topic": secondary.name if secondary else None,
        "shape": topic.shape,
        "palette": topic.palette,
        "width": WIDTH,
        "height": HEIGHT,
    }
    if video:
        n_frames = int(rng.integers(MIN_FRAMES, MAX_FRAMES + 1))
        speed = float(rng.uniform(0.4, 0.8))
        frames = [render_frame(background, sprites, topic.motion, i / n_frames, speed) for i in range(n_frames)]
        title = _title(rng, topic, secondary)  # drawn before the sound, so titles and frames keep their seeds
        path = media / f"{item_id}.mp4"
        _write_video(path, frames, make_sound(rng, topic, secondary, n_frames / FPS))
        metadata |= {"motion": topic.motion, "n_frames": n_frames, "fps": FPS, "codec": video_codec(),
                     "pitch": topic.pitch, "beat": topic.beat}
    else:
        title = _title(rng, topic, secondary)
        path = media / f"{item_id}.png"
        Image.fromarray(render_frame(background, sprites, topic.motion, 0.0, 0.0)).save(path)
    return {
        "item_id": item_id,
        "media_uri": str(path),
        "media_type": "video" if video else "image",
        "title": title,
        "topic": topic.name,
        "metadata": json.dumps(metadata, sort_keys=True),
    }


def _title(rng: np.random.Generator, topic: Topic, secondary: Topic | None) -> str:
    """3-6 words, mostly the topic's own, so that title embeddings cluster by topic."""
    n_words = int(rng.integers(3, 7))
    n_generic = int(rng.integers(0, min(2, n_words - 2) + 1))
    n_secondary = 1 if secondary and n_words - n_generic > 2 else 0
    words = [
        *rng.choice(topic.words, n_words - n_generic - n_secondary, replace=False),
        *rng.choice(GENERIC_WORDS, n_generic, replace=False),
        *(rng.choice(secondary.words, n_secondary) if secondary else []),
    ]
    return " ".join(str(w) for w in rng.permutation(words))


def _write_video(path: Path, frames: list[np.ndarray], sound: np.ndarray) -> None:
    """Encode yuv420p MP4 without B-frames, which every decoder (PyAV, decord) counts frames of correctly, with
    the sound as a mono AAC track of the same length."""
    codec = video_codec()
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.thread_count = 1  # tiny frames: threads cost more than they give on a shared machine
        stream.options = {"bf": "0", **({"preset": "veryfast", "crf": "23"} if codec == "libx264" else {})}
        audio = container.add_stream("aac", rate=RATE, layout="mono")
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
        samples = av.AudioFrame.from_ndarray(sound[None], format="fltp", layout="mono")
        samples.sample_rate, samples.pts = RATE, 0
        container.mux(audio.encode(samples))  # the encoder cuts the samples into AAC-sized frames itself
        container.mux(audio.encode())
