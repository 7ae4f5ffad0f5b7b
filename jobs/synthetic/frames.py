"""Drawing one RGB frame of a topic: a gradient sky with a little grain, and the topic's shapes in motion."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from jobs.synthetic.topics import RGB, Topic

WIDTH, HEIGHT = 128, 96


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


def make_sprites(rng: np.random.Generator, topic: Topic, secondary: Topic | None) -> list[Sprite]:
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


def make_background(rng: np.random.Generator, topic: Topic) -> np.ndarray:
    """A vertical gradient with a little grain, so that no two items are pixel-identical."""
    top, bottom = (np.array(c, dtype=np.float32) for c in topic.sky)
    ramp = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None, None]
    sky = top + (bottom - top) * ramp + rng.normal(0.0, 6.0, (HEIGHT, WIDTH, 3))
    return np.clip(sky, 0, 255).astype(np.uint8)


def render_frame(background: np.ndarray, sprites: list[Sprite], motion: str, t: float, speed: float) -> np.ndarray:
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
