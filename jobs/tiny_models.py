"""Tiny random-weight checkpoints of real architectures, built offline for the demo, `seerec make-test-model` and
the tests.

Nothing can be downloaded offline, so these stand in for published weights. They are saved in the same on-disk
layout as published checkpoints and loaded back through the same code path, so everything except the quality of
the weights is exercised for real.
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


# ---- a tiny Qwen2-VL -------------------------------------------------------------------------------------
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]

# Renders a conversation whose user turn mixes text, image and video parts; each visual part becomes
# one placeholder that the processor expands to the right number of patch tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_level_bpe(corpus: list[str], vocab_size: int, special_tokens: list[str], unk_token: str | None = None):
    """A byte-level BPE tokenizer trained on `corpus` (no tokenizer download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=unk_token))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def _train_tokenizer(corpus: list[str], vocab_size: int, special_tokens: list[str] = QWEN_SPECIAL_TOKENS,
                     named_tokens: dict[str, str] | None = None):
    """A byte-level BPE tokenizer with Qwen's special tokens.

    `named_tokens` become tokenizer attributes (`audio_token`, `audio_token_id`, ...), as processors read them.
    """
    from transformers import Qwen2TokenizerFast

    return Qwen2TokenizerFast(tokenizer_object=_byte_level_bpe(corpus, vocab_size, special_tokens),
                              eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None,
                              extra_special_tokens=named_tokens or {})


def _vision_processors() -> dict:
    """Qwen2-VL's image and video processors with small pixel budgets, which keep the vision tower cheap on a
    CPU (a 448-px frame becomes a few patches)."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    pixels = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}
    return {"image_processor": Qwen2VLImageProcessor(size=pixels),
            "video_processor": Qwen2VLVideoProcessor(size=pixels, cap_pixels_per_frame=True)}


def make_tiny_qwen2_vl(out_dir: str | Path, seed: int = 0, vocab_size: int = 600) -> Path:
    """Write a random-weight Qwen2-VL checkpoint (config, safetensors, tokenizer, processor) to `out_dir`.

    The tokenizer is trained here on a little English so that generated token ids decode to text; the
    model's output is gibberish, but loading, prompting, batching and decoding all run for real.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = [*QWEN_SPECIAL_TOKENS, "user assistant system video image describe the content mood audience",
              "a person dances in a bright kitchen while a cat watches", "funny parody of a cooking show",
              "the ocean waves at sunset with calm music", "children laugh at a cartoon dog", "0123456789 .,!?"]
    tokenizer = _train_tokenizer(corpus * 4, vocab_size)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    hidden = 64
    config = Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 4096, "rope_parameters": {
                         "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"],
                     # Wide random weights make greedy output depend on the input, not repeat one token.
                     "initializer_range": 0.5},
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": hidden, "num_heads": 2, "mlp_ratio": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    Qwen2VLProcessor(**_vision_processors(), tokenizer=tokenizer, chat_template=CHAT_TEMPLATE).save_pretrained(out)
    return out


# ---- a tiny Qwen2-Audio and a tiny Qwen2.5-Omni ----------------------------------------------------------
AUDIO_SPECIAL_TOKENS = ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
OMNI_SPECIAL_TOKENS = [*AUDIO_SPECIAL_TOKENS, "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>"]
AUDIO_CORPUS = ["user assistant system audio sound music speech describe the soundtrack mood",
                "a calm piano melody with soft rain in the background", "a man speaks quickly over loud drums",
                "children laugh while a dog barks", "upbeat pop music and cheering crowd", "0123456789 .,!?"]

# One user turn of text and media parts; audio, image and video parts each become one placeholder that the
# processor expands to the right number of tokens (the layout of the published Qwen2-Audio / Omni templates).
AUDIO_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif part['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif part['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Seconds of audio per model call (Whisper-style encoders take a fixed window; the real ones 30 s).
TINY_AUDIO_SECONDS = 5


def _tiny_text_config(ids: dict[str, int], vocab_size: int, hidden: int, mrope: bool) -> dict:
    rope = {"rope_type": "default", "rope_theta": 10000.0, **({"mrope_section": [2, 3, 3]} if mrope else {})}
    return {"vocab_size": vocab_size, "hidden_size": hidden, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "rope_parameters": rope, "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"], "initializer_range": 0.5}


def _tiny_audio_encoder(hidden: int) -> dict:
    return {"num_mel_bins": 80, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
            "d_model": 32, "max_source_positions": TINY_AUDIO_SECONDS * 50, "initializer_range": 0.5}


def _feature_extractor():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, chunk_length=TINY_AUDIO_SECONDS)


def _audio_tokenizer(special: list[str], vocab_size: int, **named: str):
    """The Qwen tokenizer plus audio (and vision) placeholders, named as the processors look them up."""
    tokens = [*QWEN_SPECIAL_TOKENS, *special]
    return _train_tokenizer([*tokens, *AUDIO_CORPUS] * 4, vocab_size, tokens, named)


def _gibberish_never_empty(model, ids: dict[str, int]) -> None:
    """Random weights may pick end-of-turn or a placeholder first; a few words of text make every run write one."""
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.min_new_tokens = 4
    model.generation_config.suppress_tokens = [i for token, i in ids.items() if token != "<|im_end|>"]


def make_tiny_qwen2_audio(out_dir: str | Path, seed: int = 0, vocab_size: int = 600) -> Path:
    """Write a random-weight Qwen2-Audio checkpoint (config, safetensors, tokenizer, Whisper features, processor)."""
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _audio_tokenizer(AUDIO_SPECIAL_TOKENS, vocab_size)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in [*QWEN_SPECIAL_TOKENS, *AUDIO_SPECIAL_TOKENS]}
    config = Qwen2AudioConfig(text_config={"model_type": "qwen2", **_tiny_text_config(ids, len(tokenizer), 64, False)},
                              audio_config=_tiny_audio_encoder(64), audio_token_index=ids["<|AUDIO|>"])
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config)
    _gibberish_never_empty(model, ids)
    model.save_pretrained(out)
    Qwen2AudioProcessor(feature_extractor=_feature_extractor(), tokenizer=tokenizer,
                        chat_template=AUDIO_CHAT_TEMPLATE).save_pretrained(out)
    return out


def make_tiny_qwen2_5_omni(out_dir: str | Path, seed: int = 0, vocab_size: int = 600) -> Path:
    """Write a random-weight Qwen2.5-Omni checkpoint in the published layout (a `qwen2_5_omni` config whose
    `thinker.*` weights read video frames and audio together); it has no talker, since seerec only wants text."""
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration, Qwen2_5OmniProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _audio_tokenizer(OMNI_SPECIAL_TOKENS, vocab_size, audio_token="<|AUDIO|>", image_token="<|IMAGE|>",
                                 video_token="<|VIDEO|>", audio_bos_token="<|audio_bos|>",
                                 audio_eos_token="<|audio_eos|>", vision_bos_token="<|vision_bos|>",
                                 vision_eos_token="<|vision_eos|>")
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in [*QWEN_SPECIAL_TOKENS, *OMNI_SPECIAL_TOKENS]}
    hidden = 64
    thinker = {
        "text_config": _tiny_text_config(ids, len(tokenizer), hidden, True),
        "audio_config": {**_tiny_audio_encoder(hidden), "n_window": 50, "output_dim": hidden},
        "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                          "out_hidden_size": hidden, "fullatt_block_indexes": [1], "window_size": 56,
                          "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                          "initializer_range": 0.5},
        "audio_token_index": ids["<|AUDIO|>"], "image_token_index": ids["<|IMAGE|>"],
        "video_token_index": ids["<|VIDEO|>"], "audio_start_token_id": ids["<|audio_bos|>"],
        "audio_end_token_id": ids["<|audio_eos|>"], "vision_start_token_id": ids["<|vision_bos|>"],
        "vision_end_token_id": ids["<|vision_eos|>"], "user_token_id": tokenizer.convert_tokens_to_ids("user"),
    }
    config = Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
    torch.manual_seed(seed)
    model = Qwen2_5OmniForConditionalGeneration(config)
    _gibberish_never_empty(model, ids)  # the checkpoint's generation config, which the thinker loads
    model.save_pretrained(out)
    Qwen2_5OmniProcessor(**_vision_processors(), feature_extractor=_feature_extractor(), tokenizer=tokenizer,
                         chat_template=AUDIO_CHAT_TEMPLATE).save_pretrained(out)
    return out


# ---- a tiny CLAP -----------------------------------------------------------------------------------------
ROBERTA_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def make_tiny_clap(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a random-weight CLAP checkpoint (HTSAT audio tower, RoBERTa text tower, processor) to `out_dir`.

    Same layout as `laion/clap-htsat-unfused`, loaded back with `from_pretrained`; two small Swin stages
    instead of four keep it about 300 KB and quick on a CPU.
    """
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = ["a dog barks in the rain", "calm piano music", "people talk in a busy kitchen", "0123456789 .,!?"]
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=_byte_level_bpe(corpus * 4, 400, ROBERTA_SPECIAL_TOKENS, unk_token="<unk>"),
        bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
        cls_token="<s>", sep_token="</s>")
    config = ClapConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 64, "projection_dim": 32, "max_position_embeddings": 80},
        audio_config={"depths": [1, 1], "num_attention_heads": [1, 2], "patch_embeds_hidden_size": 16,
                      "hidden_size": 32, "projection_dim": 32, "num_classes": 8},
        projection_dim=32,
    )
    torch.manual_seed(seed)
    ClapModel(config).save_pretrained(out)
    # The unfused checkpoints' preprocessing: 48 kHz, 10-second inputs, short clips repeated to fill them.
    features = ClapFeatureExtractor(sampling_rate=48000, max_length_s=10, truncation="rand_trunc", padding="repeatpad")
    ClapProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out)
    return out
