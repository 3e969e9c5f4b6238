"""Tiny random checkpoints of the real two-tower architectures, for offline adapter tests.

Each builder writes a directory laid out like a Hub checkpoint (``save_pretrained`` of the
model plus its tokenizer and image processor, or open_clip's ``open_clip_config.json`` plus
weights), so the adapters load it through the same path a real checkpoint id takes. Sizes are
minimal: hidden 32, 2 layers, 32-pixel images. Tokenizers are built from in-memory vocabularies:
nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmeb.items import Item, Side
from mmeb.tasks import get_task

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

IMAGE_SIZE = 32
PROJECTION = 16
VISION = dict(
    image_size=IMAGE_SIZE,
    patch_size=8,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
WORDS = [
    "a", "an", "the", "of", "with", "what", "is", "it", "this", "that", "photo", "image",
    "picture", "cat", "dog", "car", "red", "green", "blue", "represent", "given", "following",
    "question", "find", "caption", "for", "everyday", "news", "shown", "in", "color",
]
VQA_INSTRUCTION = "Represent the given image with the following question:"


def wordpiece_tokenizer(max_length: int):  # -> BertTokenizer
    """An uncased BERT-style tokenizer over a few dozen words (BLIP, BLIP-2, SigLIP tests)."""
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    punctuation = list(":?.,!")
    vocab = {token: i for i, token in enumerate(specials + punctuation + WORDS)}
    return BertTokenizer(vocab=vocab, model_max_length=max_length)


def byte_bpe_tokenizer():  # -> CLIPTokenizer
    """A CLIP tokenizer with the byte alphabet and no merges: one token per character, so
    ordinary sentences exceed CLIP's 77-token limit quickly."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def save_clip(directory: Path) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    tokenizer = byte_bpe_tokenizer()
    config = tf.CLIPConfig(
        text_config=dict(
            TEXT,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=VISION,
        projection_dim=PROJECTION,
    )
    image_processor = tf.CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    tf.CLIPModel(config).save_pretrained(directory)
    processor = tf.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(directory)
    return directory


def save_siglip(directory: Path) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    tokenizer = wordpiece_tokenizer(16)
    config = tf.SiglipConfig(
        text_config=dict(
            TEXT,
            vocab_size=len(tokenizer),
            max_position_embeddings=16,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        ),
        vision_config=VISION,
    )
    image_processor = tf.SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    tf.SiglipModel(config).save_pretrained(directory)
    tf.SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
        directory
    )
    return directory


def save_blip(directory: Path) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    tokenizer = wordpiece_tokenizer(64)
    config = tf.BlipConfig(
        text_config=dict(
            TEXT,
            vocab_size=len(tokenizer),
            encoder_hidden_size=32,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
        ),
        vision_config=VISION,
        projection_dim=PROJECTION,
        image_text_hidden_size=PROJECTION,
    )
    image_processor = tf.BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    tf.BlipForImageTextRetrieval(config).save_pretrained(directory)
    processor = tf.BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(directory)
    return directory


BLIP2_QUERY_TOKENS = 4


def save_blip2(directory: Path) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    tokenizer = wordpiece_tokenizer(64)
    config = tf.Blip2Config(
        vision_config=VISION,
        qformer_config=dict(
            TEXT,
            vocab_size=len(tokenizer),
            encoder_hidden_size=32,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
            # Blip2ForImageTextRetrieval embeds text in the Q-Former; its layers only have the
            # text feed-forward blocks with this flag.
            use_qformer_text_input=True,
        ),
        text_config=dict(
            model_type="opt",
            vocab_size=len(tokenizer),
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            word_embed_proj_dim=32,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        ),
        num_query_tokens=BLIP2_QUERY_TOKENS,
        image_text_hidden_size=PROJECTION,
    )
    model = tf.Blip2ForImageTextRetrieval(config)
    # The query tokens start at zero; random ones make each query token distinct.
    torch.nn.init.normal_(model.query_tokens, std=0.5)
    model.save_pretrained(directory)
    image_processor = tf.BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    tf.Blip2Processor(
        image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=BLIP2_QUERY_TOKENS
    ).save_pretrained(directory)
    return directory


OPENCLIP_CONFIG = {
    "embed_dim": PROJECTION,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 32, "head_width": 8,
                   "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}


def save_openclip(directory: Path) -> Path:
    """open_clip's local-dir layout: ``open_clip_config.json`` + ``open_clip_model.safetensors``.
    The text side uses open_clip's bundled OpenAI BPE tokenizer."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=OPENCLIP_CONFIG["embed_dim"],
        vision_cfg=open_clip.CLIPVisionCfg(**OPENCLIP_CONFIG["vision_cfg"]),
        text_cfg=open_clip.CLIPTextCfg(**OPENCLIP_CONFIG["text_cfg"]),
    )
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              directory / "open_clip_model.safetensors")
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                  "interpolation": "bicubic", "resize_mode": "shortest"}
    (directory / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": OPENCLIP_CONFIG, "preprocess_cfg": preprocess})
    )
    return directory


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "clip": save_clip,
    "siglip": save_siglip,
    "blip": save_blip,
    "blip2": save_blip2,
    "openclip": save_openclip,
}
def library(family: str) -> str:
    """The model library a family's adapter needs beyond torch (its last required module)."""
    from mmeb.registry import resolve_factory

    return str(resolve_factory(family).required_modules[-1])

_built: dict[str, Path] = {}


def checkpoint(family: str, factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint directory of ``family``, built once per test session."""
    pytest.importorskip("torch")
    pytest.importorskip(library(family))
    if family not in _built:
        _built[family] = BUILDERS[family](factory.mktemp(f"tiny-{family}"))
    return _built[family]


# -- inputs -----------------------------------------------------------------------------------

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220)}


def write_images(directory: Path) -> list[Path]:
    """Three small JPEGs that differ in colour and layout (rectangular, to exercise resizing)."""
    paths = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        image = Image.new("RGB", (48, 40), rgb)
        image.paste((255, 255, 255), (4 * i, 4 * i, 4 * i + 12, 4 * i + 20))
        path = directory / f"{name}.jpg"
        image.save(path, quality=95)
        paths.append(path)
    return paths


def encode(encoder: object, items: list[Item], side: Side = Side.QUERY) -> np.ndarray:
    """``encoder.encode`` on an OK-VQA-shaped task (two-tower vectors do not depend on it)."""
    return np.asarray(encoder.encode(items, side=side, task=get_task("OK-VQA")))  # type: ignore[attr-defined]


def text_item(text: str) -> Item:
    return Item(raw=text, text=text)


def image_item(path: Path, instruction: str = "Represent the given image.") -> Item:
    return Item(raw=f"<|image_1|>\n{instruction}\n", text="", instruction=instruction,
                image_path=str(path))


def vqa_item(path: Path, question: str) -> Item:
    return Item(raw=f"<|image_1|>\n{VQA_INSTRUCTION} {question}\n", text=question,
                instruction=VQA_INSTRUCTION, image_path=str(path))
