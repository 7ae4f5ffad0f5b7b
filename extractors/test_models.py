"""Tiny random-weight checkpoints of real architectures, built offline for tests and the demo.

They are saved in the same on-disk layout as published checkpoints and loaded back through the same
code path, so everything except the quality of the weights is exercised for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def make_tiny_clip(out_dir: str | Path, seed: int = 0) -> str:
    """Write an open_clip `local-dir:` checkpoint (config JSON + safetensors) and return its model name."""
    import open_clip
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP_CONFIG)
    config = {"model_cfg": TINY_CLIP_CONFIG,
              "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                 "std": [0.26862954, 0.26130258, 0.27577711]}}
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    return f"local-dir:{out.resolve()}"
