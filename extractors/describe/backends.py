"""Describe backends behind one interface: requests (prompt + decoded media) in, texts + token counts out.

`TransformersBackend` runs anywhere (CPU or GPU); `VllmBackend` needs vLLM and a GPU. Both render the
prompt with the checkpoint's own chat template through its Hugging Face processor, so the text a model
sees does not depend on the backend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from extractors.describe.prompts import chat_messages
from pipeline.config import DescribeConfig

log = logging.getLogger(__name__)


@dataclass
class DescribeRequest:
    media_type: str  # "video" | "image"
    prompt: str
    frames: np.ndarray  # (T, H, W, 3) uint8; an image is T=1
    fps: float = 0.0
    frame_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    total_frames: int = 1


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    generated_tokens: int


class PromptTooLong(ValueError):
    """A prompt (text plus visual tokens) longer than the configured limit."""


def model_family(cfg: DescribeConfig) -> str:
    if cfg.model_family != "auto":
        return cfg.model_family
    return "qwen3_vl" if "qwen3" in cfg.model.lower() else "qwen2_vl"


def make_backend(cfg: DescribeConfig):
    return VllmBackend(cfg) if cfg.backend == "vllm" else TransformersBackend(cfg)


def render_prompts(processor, requests: list[DescribeRequest]) -> list[str]:
    return [processor.apply_chat_template(chat_messages(r.media_type, r.prompt), add_generation_prompt=True,
                                          tokenize=False) for r in requests]


def video_metadata(request: DescribeRequest) -> dict:
    """What Qwen3-VL needs to place sampled frames in time (vLLM and HF take the same keys)."""
    fps = request.fps or 1.0
    return {"fps": fps, "duration": request.total_frames / fps, "total_num_frames": int(request.total_frames),
            "frames_indices": [int(i) for i in request.frame_indices], "video_backend": "seerec",
            "do_sample_frames": False}


# ---- transformers --------------------------------------------------------------------------------------
class TransformersBackend:
    """`AutoModelForImageTextToText` + `AutoProcessor`, batched generation with left padding."""

    def __init__(self, cfg: DescribeConfig):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from extractors.embed import resolve_device

        self.cfg = cfg
        self.device = resolve_device(cfg.device, cfg.num_cpus)
        dtype = {"auto": torch.bfloat16 if self.device.startswith("cuda") else torch.float32,
                 "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
        self.processor = AutoProcessor.from_pretrained(cfg.model)
        self.processor.tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
        self.model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=dtype).to(self.device).eval()
        text_config = getattr(self.model.config, "text_config", self.model.config)
        self.max_prompt_tokens = cfg.max_prompt_tokens or (
            text_config.max_position_embeddings - cfg.generation.max_new_tokens)
        self.pad_id = self.processor.tokenizer.pad_token_id

    @torch.inference_mode()
    def generate(self, requests: list[DescribeRequest]) -> list[Generation]:
        inputs = self._inputs(requests)
        lengths = inputs["attention_mask"].sum(1)
        if int(lengths.max()) > self.max_prompt_tokens:
            raise PromptTooLong(f"the prompt has {int(lengths.max())} tokens with its media, over the limit of "
                                f"{self.max_prompt_tokens} (describe.max_prompt_tokens)")
        gen = self.cfg.generation
        if gen.do_sample:
            torch.manual_seed(gen.seed)
        sampling = {"temperature": gen.temperature, "top_p": gen.top_p} if gen.do_sample else {}
        output = self.model.generate(**inputs.to(self.device), max_new_tokens=gen.max_new_tokens,
                                     do_sample=gen.do_sample, **sampling)
        new_tokens = output[:, inputs["input_ids"].shape[1]:].cpu()
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        counts = (new_tokens != self.pad_id).sum(1).tolist()
        return [Generation(t.strip(), int(p), int(c)) for t, p, c in zip(texts, lengths.tolist(), counts, strict=True)]

    def _inputs(self, requests: list[DescribeRequest]):
        from PIL import Image

        videos = [r.frames for r in requests if r.media_type == "video"]
        images = [Image.fromarray(r.frames[0]) for r in requests if r.media_type == "image"]
        extra = {}
        if videos and model_family(self.cfg) == "qwen3_vl":
            extra["video_metadata"] = [video_metadata(r) for r in requests if r.media_type == "video"]
        return self.processor(text=render_prompts(self.processor, requests), videos=videos or None,
                              images=images or None, padding=True, return_tensors="pt", **extra)


# ---- vLLM -----------------------------------------------------------------------------------------------
def vllm_inputs(prompt_text: str, request: DescribeRequest, family: str) -> dict:
    """One vLLM prompt dict: text with the chat template's placeholder, media in `multi_modal_data`.

    Qwen2/2.5-VL take a video as a (T, H, W, 3) uint8 array; Qwen3-VL takes (frames, metadata) so that
    it can time-stamp the frames we sampled. Images go in as PIL images.
    """
    if request.media_type == "video":
        frames = np.ascontiguousarray(request.frames, dtype=np.uint8)
        video = (frames, video_metadata(request)) if family == "qwen3_vl" else frames
        return {"prompt": prompt_text, "multi_modal_data": {"video": video}}
    from PIL import Image

    return {"prompt": prompt_text, "multi_modal_data": {"image": Image.fromarray(request.frames[0])}}


def vllm_engine_args(cfg: DescribeConfig) -> dict:
    v = cfg.vllm
    return {"model": cfg.model, "tensor_parallel_size": v.tensor_parallel_size, "max_model_len": v.max_model_len,
            "gpu_memory_utilization": v.gpu_memory_utilization, "dtype": v.dtype, "seed": cfg.generation.seed,
            "limit_mm_per_prompt": {"video": v.max_videos_per_prompt, "image": v.max_images_per_prompt}}


def vllm_sampling_args(cfg: DescribeConfig) -> dict:
    gen = cfg.generation
    if not gen.do_sample:
        return {"max_tokens": gen.max_new_tokens, "temperature": 0.0}
    return {"max_tokens": gen.max_new_tokens, "temperature": gen.temperature, "top_p": gen.top_p, "seed": gen.seed}


class VllmBackend:
    """An actor-held `vllm.LLM`; Ray Data gives each actor its GPUs (`describe.num_gpus`)."""

    def __init__(self, cfg: DescribeConfig):
        try:
            import vllm
        except ImportError:
            raise RuntimeError("describe.backend=vllm needs vLLM: install 'seerec[vllm]' on a GPU machine") from None
        from transformers import AutoProcessor

        self.cfg, self.family = cfg, model_family(cfg)
        self.processor = AutoProcessor.from_pretrained(cfg.model)
        self.llm = vllm.LLM(**vllm_engine_args(cfg))
        self.sampling = vllm.SamplingParams(**vllm_sampling_args(cfg))

    def generate(self, requests: list[DescribeRequest]) -> list[Generation]:
        prompts = [vllm_inputs(text, r, self.family)
                   for text, r in zip(render_prompts(self.processor, requests), requests, strict=True)]
        outputs = self.llm.generate(prompts, self.sampling, use_tqdm=False)
        return [Generation(o.outputs[0].text.strip(), len(o.prompt_token_ids), len(o.outputs[0].token_ids))
                for o in outputs]
