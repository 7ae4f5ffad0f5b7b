"""The sound track of a synthetic video: its topic's tone and rhythm, so that audio features can tell topics apart.

Each topic has a pitch and a beat (pulses per second, or a steady tone); an item detunes the pitch a little,
varies its loudness and adds a faint hiss, and an item with a secondary topic carries that topic's tone
quietly underneath. Nothing in it is speech: a transcript of it is empty or noise.
"""

from __future__ import annotations

import numpy as np

from jobs.synthetic.topics import Topic

RATE = 16000  # Hz; the audio stages resample to what each model takes
HARMONICS = (1.0, 0.5, 0.25)  # the loudness of the pitch and its first overtones


def make_sound(rng: np.random.Generator, topic: Topic, secondary: Topic | None, seconds: float) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at RATE for `seconds` of one item's sound."""
    t = np.arange(int(seconds * RATE)) / RATE
    sound = _tone(rng, topic, t)
    if secondary:
        sound += 0.3 * _tone(rng, secondary, t)
    sound *= float(rng.uniform(0.4, 0.7)) / max(float(np.abs(sound).max()), 1e-6)
    sound += rng.normal(0.0, 0.01, len(t))
    return np.clip(sound, -1.0, 1.0).astype(np.float32)


def _tone(rng: np.random.Generator, topic: Topic, t: np.ndarray) -> np.ndarray:
    pitch = topic.pitch * float(rng.uniform(0.97, 1.03))
    phase = float(rng.uniform(0, 2 * np.pi))
    wave = sum(level * np.sin(2 * np.pi * k * pitch * t + k * phase) for k, level in enumerate(HARMONICS, 1))
    if topic.beat:  # short pulses: loud at the start of each beat, fading before the next
        wave *= np.exp(-6.0 * ((t * topic.beat + phase / (2 * np.pi)) % 1.0))
    return wave
