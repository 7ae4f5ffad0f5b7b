"""A small synthetic catalog of real media files, users and interactions, made offline from a seed.

Every item is rendered from one latent topic (a palette, a shape, a motion and some title words), and every
synthetic user prefers one or two topics and walks through each topic in a fixed per-topic order. So pixels,
titles and interaction sequences all carry signal a recommender can learn, and the demo needs no download.
The same seed always gives the same manifest and the same interactions.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from tqdm import tqdm

RGB = tuple[int, int, int]

WIDTH, HEIGHT = 128, 96
FPS = 8
MIN_FRAMES, MAX_FRAMES = 12, 24
MIN_HISTORY, MAX_HISTORY = 8, 30
# The floor below which no user goes, even in a catalog too small for MIN_HISTORY items per user.
HARD_MIN_HISTORY = 5
START_TIME = 1_700_000_000  # 2023-11-14, so timestamps look like real unix seconds.

SECONDARY_SHARE = 0.3  # items that also show a little of a second topic
SWITCH_PROB = 0.2  # a user hops between their preferred topics
SKIP_PROB = 0.15  # a user skips one item of the topic order
NOISE_PROB = 0.1  # a user clicks something random

GENERIC_WORDS = ("calm", "bright", "quiet", "little", "simple", "scene", "view", "moment", "loop", "story")


@dataclass(frozen=True)
class Topic:
    """A latent topic: how its items look, move and are titled."""

    name: str
    sky: tuple[RGB, RGB]  # background gradient, top to bottom
    colors: tuple[RGB, ...]  # shape colours
    shape: str
    motion: str
    words: tuple[str, ...]

    @property
    def palette(self) -> list[str]:
        return ["#{:02x}{:02x}{:02x}".format(*c) for c in (*self.sky, *self.colors)]


TOPICS = (
    Topic(
        "ocean",
        sky=((20, 60, 140), (0, 150, 190)),
        colors=((240, 250, 255), (90, 200, 230), (0, 90, 160)),
        shape="circle",
        motion="drift_right",
        words=("ocean", "waves", "sea", "blue", "tide", "surf", "coral", "reef", "shore", "deep"),
    ),
    Topic(
        "forest",
        sky=((30, 70, 30), (90, 140, 60)),
        colors=((20, 110, 40), (140, 190, 70), (90, 60, 30)),
        shape="triangle",
        motion="drift_up",
        words=("forest", "pine", "moss", "green", "trees", "fern", "woodland", "leaves", "trail", "grove"),
    ),
    Topic(
        "sunset",
        sky=((250, 130, 40), (120, 40, 110)),
        colors=((255, 210, 80), (240, 90, 60), (80, 20, 70)),
        shape="stripes",
        motion="zoom",
        words=("sunset", "golden", "dusk", "orange", "horizon", "glow", "evening", "amber", "red", "sky"),
    ),
    Topic(
        "city night",
        sky=((10, 10, 30), (40, 30, 70)),
        colors=((255, 40, 180), (0, 230, 255), (255, 220, 60)),
        shape="square",
        motion="pulse",
        words=("city", "neon", "night", "street", "tower", "lights", "metro", "traffic", "urban", "rooftop"),
    ),
    Topic(
        "snow",
        sky=((200, 215, 235), (250, 250, 255)),
        colors=((255, 255, 255), (170, 200, 230), (120, 150, 190)),
        shape="snowflake",
        motion="drift_down",
        words=("snow", "winter", "frost", "ice", "white", "cold", "blizzard", "alpine", "flakes", "frozen"),
    ),
    Topic(
        "desert",
        sky=((240, 200, 120), (200, 140, 70)),
        colors=((230, 170, 90), (170, 100, 50), (255, 235, 170)),
        shape="diamond",
        motion="drift_left",
        words=("desert", "sand", "dunes", "dry", "cactus", "camel", "mirage", "arid", "canyon", "heat"),
    ),
    Topic(
        "candy",
        sky=((255, 200, 230), (250, 240, 200)),
        colors=((255, 90, 160), (120, 220, 200), (170, 110, 240)),
        shape="ring",
        motion="bounce",
        words=("candy", "sweet", "sugar", "pink", "lolly", "dessert", "caramel", "treat", "jelly", "bonbon"),
    ),
    Topic(
        "space",
        sky=((0, 0, 10), (20, 10, 50)),
        colors=((240, 240, 255), (150, 120, 255), (255, 180, 90)),
        shape="star",
        motion="rotate",
        words=("space", "galaxy", "stars", "planet", "orbit", "cosmic", "nebula", "comet", "rocket", "moon"),
    ),
)


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    radii = [1.0 if k % 2 == 0 else inner for k in range(2 * points)]
    return [
        (r * math.sin(math.pi * k / points), -r * math.cos(math.pi * k / points)) for k, r in enumerate(radii)
    ]


def _snowflake(arms: int = 3, width: float = 0.12) -> list[list[tuple[float, float]]]:
    bar = [(-1.0, -width), (1.0, -width), (1.0, width), (-1.0, width)]
    turns = [math.pi * k / arms for k in range(arms)]
    return [
        [(x * math.cos(a) - y * math.sin(a), x * math.sin(a) + y * math.cos(a)) for x, y in bar]
        for a in turns
    ]


# Filled shapes as polygons around (0, 0) with radius about 1; "circle" and "ring" are drawn as ellipses.
POLYGONS = {
    "triangle": [[(0.0, -1.0), (0.87, 0.5), (-0.87, 0.5)]],
    "square": [[(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]],
    "diamond": [[(0.0, -1.2), (0.7, 0.0), (0.0, 1.2), (-0.7, 0.0)]],
    "star": [_star()],
    "snowflake": _snowflake(),
    "stripes": [
        [(-1.3, y - 0.15), (1.3, y - 0.15), (1.3, y + 0.15), (-1.3, y + 0.15)] for y in (-0.6, 0, 0.6)
    ],
}


@dataclass
class SyntheticCatalog:
    """Where make_catalog wrote its files, and what it made."""

    root: Path
    manifest: Path  # root / "catalog.parquet"
    interactions: Path  # root / "interactions.csv"
    n_items: int
    n_users: int
    n_interactions: int
    topics: list[str]


@dataclass(frozen=True)
class Sprite:
    """One shape in a scene: x, y are fractions of the frame's width and height, the radius of its height."""

    shape: str
    color: RGB
    x: float
    y: float
    size: float
    angle: float
    phase: float


def make_catalog(
    root: Path,
    n_items: int = 300,
    n_users: int = 400,
    seed: int = 0,
    video_share: float = 0.5,
    progress: bool = False,
) -> SyntheticCatalog:
    """Render the items under root/media and write root/catalog.parquet and root/interactions.csv."""
    if n_items < HARD_MIN_HISTORY:
        raise ValueError(f"n_items must be at least {HARD_MIN_HISTORY}, the fewest items any user gets")
    if n_users < 1 or seed < 0 or not 0.0 <= video_share <= 1.0:
        raise ValueError("n_users must be >= 1, seed >= 0 and video_share within [0, 1]")
    root = Path(root).resolve()
    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)

    layout = np.random.default_rng([seed, 0])
    item_topics = layout.permutation(np.arange(n_items) % len(TOPICS))  # as balanced as n_items allows
    is_video = np.zeros(n_items, dtype=bool)
    is_video[layout.permutation(n_items)[: round(video_share * n_items)]] = True
    ids = [f"syn-{i + 1:0{max(4, len(str(n_items)))}d}" for i in range(n_items)]

    rows = [
        _make_item(media, ids[i], int(item_topics[i]), bool(is_video[i]), np.random.default_rng([seed, 1, i]))
        for i in tqdm(range(n_items), desc="rendering synthetic items", unit="item", disable=not progress)
    ]
    manifest = root / "catalog.parquet"
    pd.DataFrame(
        rows, columns=["item_id", "media_uri", "media_type", "title", "topic", "metadata"]
    ).to_parquet(manifest, index=False)

    interactions = _simulate_users(ids, item_topics, n_users, seed)
    interactions_path = root / "interactions.csv"
    interactions.to_csv(interactions_path, index=False)
    return SyntheticCatalog(
        root=root,
        manifest=manifest,
        interactions=interactions_path,
        n_items=n_items,
        n_users=n_users,
        n_interactions=len(interactions),
        topics=[t.name for t in TOPICS],
    )


@functools.cache
def video_codec() -> str:
    """H.264 where this PyAV build can encode it (smaller, universally decodable), else MPEG-4 part 2."""
    try:
        av.codec.Codec("libx264", "w")
    except ValueError:  # PyAV's UnknownCodecError: this FFmpeg build has no such encoder.
        return "mpeg4"
    return "libx264"


def _make_item(media: Path, item_id: str, topic_index: int, video: bool, rng: np.random.Generator) -> dict:
    """Render one item's media file and return its manifest row."""
    topic = TOPICS[topic_index]
    secondary = None
    if rng.random() < SECONDARY_SHARE:
        secondary = TOPICS[(topic_index + int(rng.integers(1, len(TOPICS)))) % len(TOPICS)]
    sprites = _sprites(rng, topic, secondary)
    background = _background(rng, topic)
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
        frames = [_render(background, sprites, topic.motion, i / n_frames, speed) for i in range(n_frames)]
        path = media / f"{item_id}.mp4"
        _write_video(path, frames)
        metadata |= {"motion": topic.motion, "n_frames": n_frames, "fps": FPS, "codec": video_codec()}
    else:
        path = media / f"{item_id}.png"
        Image.fromarray(_render(background, sprites, topic.motion, 0.0, 0.0)).save(path)
    return {
        "item_id": item_id,
        "media_uri": str(path),
        "media_type": "video" if video else "image",
        "title": _title(rng, topic, secondary),
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


def _sprites(rng: np.random.Generator, topic: Topic, secondary: Topic | None) -> list[Sprite]:
    """Three to six shapes of the topic, plus one or two of the secondary topic when there is one."""
    counts = [(topic, int(rng.integers(3, 7)))]
    if secondary:
        counts.append((secondary, int(rng.integers(1, 3))))
    sprites = []
    for source, count in counts:
        for _ in range(count):
            base = np.array(source.colors[int(rng.integers(len(source.colors)))])
            color = tuple(int(c) for c in np.clip(base + rng.integers(-20, 21, 3), 0, 255))
            x, y = rng.uniform(0.1, 0.9, 2)
            sprites.append(
                Sprite(
                    source.shape,
                    color,
                    float(x),
                    float(y),
                    float(rng.uniform(0.08, 0.2)),
                    float(rng.uniform(0, 2 * math.pi)),
                    float(rng.uniform(0, 2 * math.pi)),
                )
            )
    return sprites


def _background(rng: np.random.Generator, topic: Topic) -> np.ndarray:
    """A vertical gradient with a little grain, so that no two items are pixel-identical."""
    top, bottom = (np.array(c, dtype=np.float32) for c in topic.sky)
    ramp = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None, None]
    sky = top + (bottom - top) * ramp + rng.normal(0.0, 6.0, (HEIGHT, WIDTH, 3))
    return np.clip(sky, 0, 255).astype(np.uint8)


def _render(background: np.ndarray, sprites: list[Sprite], motion: str, t: float, speed: float) -> np.ndarray:
    """One RGB frame at clip phase t in [0, 1); a still image is the frame at t = 0."""
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    for sprite in sprites:
        x, y, size, angle = _pose(sprite, motion, t, speed)
        _draw_shape(draw, sprite.shape, sprite.color, x * WIDTH, y * HEIGHT, size * HEIGHT, angle)
    return np.asarray(image)


def _pose(s: Sprite, motion: str, t: float, speed: float) -> tuple[float, float, float, float]:
    """Where a sprite is at phase t under the topic's motion: (x, y, size, angle)."""
    x, y, size, angle = s.x, s.y, s.size, s.angle
    turn = 2 * math.pi * t
    match motion:
        case "drift_left":
            x = _wrap(x - speed * t)
        case "drift_right":
            x = _wrap(x + speed * t)
        case "drift_up":
            y = _wrap(y - speed * t)
        case "drift_down":
            y = _wrap(y + speed * t)
        case "bounce":
            y -= 0.25 * abs(math.sin(turn + s.phase))
        case "rotate":  # the whole scene orbits the centre while each shape spins
            dx, dy = x - 0.5, y - 0.5
            x, y = (
                0.5 + dx * math.cos(turn) - dy * math.sin(turn),
                0.5 + dx * math.sin(turn) + dy * math.cos(turn),
            )
            angle += turn
        case "pulse":
            size *= 1 + 0.4 * math.sin(2 * turn + s.phase)
        case "zoom":
            scale = 0.7 + 0.8 * t
            x, y, size = 0.5 + (x - 0.5) * scale, 0.5 + (y - 0.5) * scale, size * scale
        case _:
            raise ValueError(f"unknown motion {motion!r}")
    return x, y, size, angle


def _wrap(v: float) -> float:
    """Shapes leave one edge and come back in at the other, a little outside the frame."""
    return (v + 0.15) % 1.3 - 0.15


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, color: RGB, x: float, y: float, radius: float, angle: float
) -> None:
    if shape in ("circle", "ring"):
        box = (x - radius, y - radius, x + radius, y + radius)
        if shape == "circle":
            draw.ellipse(box, fill=color)
        else:
            draw.ellipse(box, outline=color, width=max(2, round(radius / 3)))
        return
    cos, sin = math.cos(angle), math.sin(angle)
    for polygon in POLYGONS[shape]:
        draw.polygon(
            [(x + radius * (px * cos - py * sin), y + radius * (px * sin + py * cos)) for px, py in polygon],
            fill=color,
        )


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    """Encode yuv420p MP4 without B-frames, which every decoder (PyAV, decord) counts frames of correctly."""
    codec = video_codec()
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.thread_count = 1  # tiny frames: threads cost more than they give on a shared machine
        stream.options = {"bf": "0", **({"preset": "veryfast", "crf": "23"} if codec == "libx264" else {})}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _simulate_users(ids: list[str], item_topics: np.ndarray, n_users: int, seed: int) -> pd.DataFrame:
    """Interaction logs of users who follow their preferred topics along each topic's hidden item order."""
    order_rng = np.random.default_rng([seed, 2])
    orders = {
        t: [int(i) for i in order_rng.permutation(np.flatnonzero(item_topics == t))]
        for t in range(len(TOPICS))
    }
    user_width = max(4, len(str(n_users)))
    frames = []
    for u in range(n_users):
        rng = np.random.default_rng([seed, 3, u])
        history = _user_history(rng, orders, len(ids))
        times = (
            START_TIME
            + int(rng.integers(0, 30 * 86_400))
            + np.cumsum(rng.integers(60, 6 * 3600, len(history)))
        )
        frames.append(
            pd.DataFrame(
                {
                    "user_id": f"u{u + 1:0{user_width}d}",
                    "item_id": [ids[i] for i in history],
                    "timestamp": times.astype(np.int64),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _user_history(rng: np.random.Generator, orders: dict[int, list[int]], n_items: int) -> list[int]:
    """One user's items in time order: mostly the next unseen item of a preferred topic, sometimes noise.

    Histories are capped a little above the number of items in the user's topics, so that in tiny catalogs
    users stop rather than wander off into topics they do not like.
    """
    available = [t for t, items in orders.items() if items]
    prefs = [
        int(t) for t in rng.choice(available, min(int(rng.integers(1, 3)), len(available)), replace=False)
    ]
    main_weight = float(rng.uniform(0.55, 0.8))
    weights = [1.0] if len(prefs) == 1 else [main_weight, 1 - main_weight]
    capacity = sum(len(orders[t]) for t in prefs)
    length = min(
        int(rng.integers(MIN_HISTORY, MAX_HISTORY + 1)), max(HARD_MIN_HISTORY, capacity * 5 // 4), n_items
    )
    # Each topic is entered at a random place; -1 so that the first step lands exactly there.
    cursors = {t: int(rng.integers(len(orders[t]))) - 1 for t in prefs}
    topic = prefs[int(rng.choice(len(prefs), p=weights))]
    seen: set[int] = set()
    history: list[int] = []
    while len(history) < length:
        if rng.random() < SWITCH_PROB:
            topic = prefs[int(rng.choice(len(prefs), p=weights))]
        item = None
        if rng.random() >= NOISE_PROB:
            for t in [topic, *(p for p in prefs if p != topic)]:  # an exhausted topic hands over to the other
                item, cursors[t] = _next_in_order(rng, orders[t], cursors[t], seen)
                if item is not None:
                    topic = t
                    break
        if item is None:
            item = int(rng.choice([i for i in range(n_items) if i not in seen]))
        seen.add(item)
        history.append(item)
    return history


def _next_in_order(
    rng: np.random.Generator, order: list[int], cursor: int, seen: set[int]
) -> tuple[int | None, int]:
    """Step along a topic's order (now and then skipping one) to the first unseen item, and its position."""
    start = cursor + (2 if rng.random() < SKIP_PROB else 1)
    for k in range(len(order)):
        position = (start + k) % len(order)
        if order[position] not in seen:
            return order[position], position
    return None, cursor
