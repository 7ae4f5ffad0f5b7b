"""Prompt templates: the text each item is asked about, and a stable id stored with every description.

The id hashes everything that shapes what the model is asked (template, title handling, version), so a
changed prompt makes earlier descriptions stale and the job redoes them, while an unchanged one resumes.
"""

from __future__ import annotations

import hashlib

from pipeline.config import PromptConfig


class PromptSet:
    def __init__(self, cfg: PromptConfig):
        self.cfg = cfg

    def template(self, media_type: str) -> str:
        if media_type == "video":
            return self.cfg.video
        if media_type == "image":
            return self.cfg.image
        raise ValueError(f"no prompt for media_type {media_type!r}; describe takes video and image items")

    def prompt_id(self, media_type: str) -> str:
        parts = [self.template(media_type), str(self.cfg.include_title)]
        if self.cfg.include_title:
            parts.append(self.cfg.title_template)
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]
        return f"{media_type}-v{self.cfg.version}-{digest}"

    def ids(self) -> list[str]:
        return [self.prompt_id("video"), self.prompt_id("image")]

    def render(self, media_type: str, title: str | None) -> str:
        """The instruction text; the title is appended only when enabled and present."""
        text = self.template(media_type)
        if self.cfg.include_title and title and title.strip():
            text = f"{text} {self.cfg.title_template.format(title=title.strip())}"
        return text


def chat_messages(media_type: str, prompt: str) -> list[dict]:
    """One user turn holding the media placeholder, then the instruction, in the HF chat format."""
    return [{"role": "user", "content": [{"type": media_type}, {"type": "text", "text": prompt}]}]
