"""The latent topics of the synthetic catalog: each item is rendered from one, and each user prefers one or two."""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]

GENERIC_WORDS = ("calm", "bright", "quiet", "little", "simple", "scene", "view", "moment", "loop", "story")


@dataclass(frozen=True)
class Topic:
    """A latent topic: how its items look, move, sound and are titled."""

    name: str
    sky: tuple[RGB, RGB]  # background gradient, top to bottom
    colors: tuple[RGB, ...]  # shape colours
    shape: str
    motion: str
    words: tuple[str, ...]
    pitch: float  # Hz of the tone under the topic's videos
    beat: float  # pulses per second of that tone (0: a steady tone)

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
        pitch=196.0,
        beat=0.75,
    ),
    Topic(
        "forest",
        sky=((30, 70, 30), (90, 140, 60)),
        colors=((20, 110, 40), (140, 190, 70), (90, 60, 30)),
        shape="triangle",
        motion="drift_up",
        words=("forest", "pine", "moss", "green", "trees", "fern", "woodland", "leaves", "trail", "grove"),
        pitch=330.0,
        beat=0.0,
    ),
    Topic(
        "sunset",
        sky=((250, 130, 40), (120, 40, 110)),
        colors=((255, 210, 80), (240, 90, 60), (80, 20, 70)),
        shape="stripes",
        motion="zoom",
        words=("sunset", "golden", "dusk", "orange", "horizon", "glow", "evening", "amber", "red", "sky"),
        pitch=262.0,
        beat=1.5,
    ),
    Topic(
        "city night",
        sky=((10, 10, 30), (40, 30, 70)),
        colors=((255, 40, 180), (0, 230, 255), (255, 220, 60)),
        shape="square",
        motion="pulse",
        words=("city", "neon", "night", "street", "tower", "lights", "metro", "traffic", "urban", "rooftop"),
        pitch=523.0,
        beat=4.0,
    ),
    Topic(
        "snow",
        sky=((200, 215, 235), (250, 250, 255)),
        colors=((255, 255, 255), (170, 200, 230), (120, 150, 190)),
        shape="snowflake",
        motion="drift_down",
        words=("snow", "winter", "frost", "ice", "white", "cold", "blizzard", "alpine", "flakes", "frozen"),
        pitch=784.0,
        beat=0.0,
    ),
    Topic(
        "desert",
        sky=((240, 200, 120), (200, 140, 70)),
        colors=((230, 170, 90), (170, 100, 50), (255, 235, 170)),
        shape="diamond",
        motion="drift_left",
        words=("desert", "sand", "dunes", "dry", "cactus", "camel", "mirage", "arid", "canyon", "heat"),
        pitch=147.0,
        beat=2.5,
    ),
    Topic(
        "candy",
        sky=((255, 200, 230), (250, 240, 200)),
        colors=((255, 90, 160), (120, 220, 200), (170, 110, 240)),
        shape="ring",
        motion="bounce",
        words=("candy", "sweet", "sugar", "pink", "lolly", "dessert", "caramel", "treat", "jelly", "bonbon"),
        pitch=659.0,
        beat=6.0,
    ),
    Topic(
        "space",
        sky=((0, 0, 10), (20, 10, 50)),
        colors=((240, 240, 255), (150, 120, 255), (255, 180, 90)),
        shape="star",
        motion="rotate",
        words=("space", "galaxy", "stars", "planet", "orbit", "cosmic", "nebula", "comet", "rocket", "moon"),
        pitch=110.0,
        beat=0.0,
    ),
)
