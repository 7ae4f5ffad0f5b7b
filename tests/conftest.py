"""Shared fixtures: the real data folder, one local Ray for the session, tiny real-architecture models."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import SeerecConfig, validate_config
from tests.helpers import require_shared


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for all integration tests (starting Ray costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    from jobs.tiny_models import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_clap(tmp_path_factory) -> str:
    from jobs.tiny_models import make_tiny_clap

    return str(make_tiny_clap(tmp_path_factory.mktemp("tiny-clap")))


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> str:
    from jobs.tiny_models import make_tiny_qwen2_vl

    return str(make_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny-qwen2-vl")))


@pytest.fixture
def make_config(tmp_path, tiny_clip):
    """A config with a fresh store in tmp_path, small media settings and the tiny CLIP."""

    def build(**sections) -> SeerecConfig:
        data = {
            "store": {"uri": str(tmp_path / "store"), "write_batch_rows": 64},
            "ray": {"num_cpus": 2},
            "media": {"num_frames": 4, "max_side": 128},
            "embed": {"text": {"items_per_batch": 32}, "image": {"model": tiny_clip, "pretrained": None,
                                                                "items_per_batch": 4}},
        }
        for name, values in sections.items():
            data[name] = {**data.get(name, {}), **values}
        return validate_config(data)

    return build
