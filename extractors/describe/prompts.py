"""Prompt templates: the text each item is asked about, and a stable id stored with every description.

The id hashes everything that shapes what the model is asked (template, title handling, version), so a
changed prompt makes earlier descriptions stale and the job redoes them, while an unchanged one resumes.
A prompt set holds one template per kind of request: `video` and `image` for describe, `audio` and `omni`
(frames and sound together) for describe-audio.
"""

from __future__ import annotations

import hashlib

from pipeline.config import PromptSettings


class PromptSet:
    def __init__(self, cfg: PromptSettings):
        self.cfg = cfg
        self.kinds = tuple(name for name in type(cfg).model_fields if name not in PromptSettings.model_fields)

    def template(self, kind: str) -> str:
        if kind not in self.kinds:
            raise ValueError(f"no prompt for media_type {kind!r}; describe takes {' and '.join(self.kinds)} items")
        return getattr(self.cfg, kind)

    def prompt_id(self, kind: str) -> str:
        parts = [self.template(kind), str(self.cfg.include_title)]
        if self.cfg.include_title:
            parts.append(self.cfg.title_template)
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]
        return f"{kind}-v{self.cfg.version}-{digest}"

    def ids(self) -> list[str]:
        return [self.prompt_id(kind) for kind in self.kinds]

    def render(self, kind: str, title: str | None) -> str:
        """The instruction text; the title is appended only when enabled and present."""
        text = self.template(kind)
        if self.cfg.include_title and title and title.strip():
            text = f"{text} {self.cfg.title_template.format(title=title.strip())}"
        return text


def chat_messages(media_type: str, prompt: str) -> list[dict]:
    """One user turn holding the media placeholder, then the instruction, in the HF chat format.

    `media_type` is the placeholder's part type: video, image or audio (a video that brings its sound along,
    for an omni model, is still one video part).
    """
    return [{"role": "user", "content": [{"type": media_type}, {"type": "text", "text": prompt}]}]
