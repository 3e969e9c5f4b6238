"""The starting point of ``vlm2vec-tiny``: a randomly initialised Qwen2-VL of a few MB with a
word-level tokenizer fitted to the training texts.

A Qwen2-VL so small needs a vocabulary of the words it will read, not a 150K BPE table:
the sample suite's texts use a few hundred words, and one embedding row per word costs almost
nothing. The tokenizer is fitted to the *training* split only; every eval word outside it reads
as ``<|unk|>`` (:func:`vocabulary_overlap` measures how many there are).

The folder written here is an ordinary Qwen2-VL checkpoint (``config.json``, safetensors
weights, ``tokenizer.json``, ``preprocessor_config.json``): ``vlm2vec train`` reads it with
``checkpoint:`` like any base model, and ``mmeb run`` loads the trained result through the
Qwen2-VL adapter.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Special tokens: the image placeholder the Qwen2-VL adapter writes, the tokens Qwen2-VL's
#: config names, an end token appended to every text (its final state is the embedding) and
#: padding / unknown.
PAD, UNK, END = "<|pad|>", "<|unk|>", "<|endoftext|>"
IMAGE, VIDEO, VISION_START, VISION_END = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                          "<|vision_end|>")
SPECIALS = (PAD, UNK, END, IMAGE, VIDEO, VISION_START, VISION_END)
#: How texts are split into words: runs of letters or digits, or one other visible character.
WORD = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")
IMAGE_PLACEHOLDER = re.compile(r"<\|image_\d+\|>")


@dataclass(frozen=True)
class TinyShape:
    """The architecture of the tiny model (the defaults are ``vlm2vec-tiny``'s)."""

    hidden_size: int = 128
    intermediate_size: int = 256
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    vision_dim: int = 64
    vision_depth: int = 2
    vision_heads: int = 4
    #: Every image is resized to this many pixels (min = max in the image processor), so
    #: pictures of any size give (side / (patch_size * merge_size))^2 image tokens: 9 at
    #: 96 x 96, the sample suite's eval pictures unresized.
    image_side: int = 96
    #: The vision tower's patch side and how many patches per side merge into one language
    #: model token. The sample suite draws its scenes on a 3 x 3 grid of cells, and at 96 px
    #: with 16-pixel patches merged 2 x 2 each token covers exactly one cell, with the cell's
    #: centre on the corner its four patches share: an object looks the same to the tower in
    #: every cell, so what it learns in one cell holds in the other eight. A grid that cuts
    #: cells at other offsets (112 px with 14-pixel patches: cells of 37.3 pixels) shows the
    #: same object as a different input in each, and the tower alone reached less than half
    #: the accuracy on Sample-Shapes (``benchmarks/bench_tiny_vision.py``).
    patch_size: int = 16
    merge_size: int = 2
    #: Standard deviation of the vision tower's random initial weights (transformers' default
    #: is 0.02). At width 64 that start leaves attention almost uniform and every patch token
    #: alike, and the tower learns slowly; with 16-pixel patches it does not learn at all
    #: (``benchmarks/bench_tiny_vision.py``).
    vision_init_std: float = 0.1


def words(text: str) -> list[str]:
    """The tokenizer's words of one text (image placeholders removed)."""
    return WORD.findall(IMAGE_PLACEHOLDER.sub(" ", text))


def fit_vocabulary(texts: Iterable[str]) -> list[str]:
    """Every word of ``texts``, most frequent first (ties in alphabetical order)."""
    counts = Counter(w for t in texts for w in words(t))
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def vocabulary_overlap(vocabulary: Sequence[str], texts: Iterable[str]) -> dict[str, int]:
    """How many word occurrences (and distinct words) of ``texts`` the vocabulary lacks."""
    known = set(vocabulary)
    seen = [w for t in texts for w in words(t)]
    missing = [w for w in seen if w not in known]
    return {"words": len(seen), "unknown": len(missing), "distinct_unknown": len(set(missing))}


def build_tokenizer(vocabulary: Sequence[str]) -> Any:
    """A word-level fast tokenizer over ``SPECIALS + vocabulary`` that appends ``END``."""
    import transformers as tf
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate([*SPECIALS, *vocabulary])}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(WORD.pattern), behavior="isolated")])
    core.post_processor = processors.TemplateProcessing(
        single=f"$A {END}", special_tokens=[(END, vocab[END])])
    tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, unk_token=UNK, eos_token=END,
        additional_special_tokens=[IMAGE, VIDEO, VISION_START, VISION_END])
    tokenizer.model_max_length = 512
    return tokenizer


def model_config(shape: TinyShape, vocab_size: int, tokenizer: Any) -> Any:
    import transformers as tf

    ids: dict[str, Any] = {name: int(tokenizer.convert_tokens_to_ids(token)) for name, token in (
        ("image_token_id", IMAGE), ("video_token_id", VIDEO),
        ("vision_start_token_id", VISION_START), ("vision_end_token_id", VISION_END))}
    head_dim = shape.hidden_size // shape.heads
    # M-RoPE splits each head's rotary half-dimension into (temporal, height, width).
    half = head_dim // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    return tf.Qwen2VLConfig(
        text_config={
            "vocab_size": vocab_size, "hidden_size": shape.hidden_size,
            "intermediate_size": shape.intermediate_size,
            "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
            "num_key_value_heads": shape.kv_heads, "max_position_embeddings": 1024,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                "mrope_section": section},
            "tie_word_embeddings": True, "pad_token_id": int(tokenizer.pad_token_id),
            "eos_token_id": int(tokenizer.eos_token_id), "bos_token_id": None,
        },
        vision_config={
            "depth": shape.vision_depth, "embed_dim": shape.vision_dim,
            "hidden_size": shape.hidden_size, "num_heads": shape.vision_heads,
            "mlp_ratio": 2, "patch_size": shape.patch_size,
            "spatial_merge_size": shape.merge_size,
            "temporal_patch_size": 2, "in_channels": 3,
            "initializer_range": shape.vision_init_std,
        },
        tie_word_embeddings=True,
        **ids,
    )


def image_processor_config(shape: TinyShape) -> dict[str, Any]:
    pixels = shape.image_side * shape.image_side
    return {
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor",
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "min_pixels": pixels, "max_pixels": pixels,
        "size": {"min_pixels": pixels, "max_pixels": pixels},
        "merge_size": shape.merge_size, "patch_size": shape.patch_size, "temporal_patch_size": 2,
        "resample": 3,
        "rescale_factor": 1 / 255,
    }


def build_initial(out: Path, texts: Iterable[str], *, shape: TinyShape | None = None,
                  seed: int = 0) -> Path:
    """Write a randomly initialised tiny Qwen2-VL checkpoint with a tokenizer fitted to
    ``texts`` into ``out``; returns ``out``."""
    import torch
    import transformers as tf

    shape = shape or TinyShape()
    vocabulary = fit_vocabulary(texts)
    tokenizer = build_tokenizer(vocabulary)
    config = model_config(shape, len(tokenizer), tokenizer)
    torch.manual_seed(seed)
    model = tf.Qwen2VLForConditionalGeneration(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    (out / "preprocessor_config.json").write_text(
        json.dumps(image_processor_config(shape), indent=2) + "\n")
    (out / "tiny_shape.json").write_text(json.dumps(asdict(shape), indent=2) + "\n")
    return out


def training_texts(root: Path) -> list[str]:
    """Every text of the sample suite's training split (queries, positives, negatives)."""
    import pyarrow.parquet as pq

    texts: list[str] = []
    for path in sorted((root / "train").glob("*/*.parquet")):
        table = pq.read_table(path, columns=["qry", "pos_text", "neg_text"])
        for column in table.columns:
            texts.extend(str(v) for v in column.to_pylist() if v)
    return texts


def eval_texts(root: Path) -> list[str]:
    """Every query and candidate text of the sample suite's eval split."""
    import pyarrow.parquet as pq

    texts: list[str] = []
    for path in sorted((root / "eval").glob("*/test-*.parquet")):
        table = pq.read_table(path, columns=["qry_text", "tgt_text"])
        texts.extend(str(v) for v in table.column("qry_text").to_pylist() if v)
        for row in table.column("tgt_text").to_pylist():
            texts.extend(str(v) for v in row if v)
    return texts


# -- train/eval overlap -----------------------------------------------------------------------


def _query_text(raw: str) -> str:
    """An MMEB query string with its image placeholder normalised (train and eval strings
    number the image the same way, but say it once)."""
    return IMAGE_PLACEHOLDER.sub("<image>", raw).strip()


def overlap_report(root: Path) -> dict[str, dict[str, int]]:
    """Per sample dataset, how much of the eval split occurs in the training split: eval
    queries equal to a training query (same text and same image bytes), eval (query, gold)
    pairs equal to a training (query, positive) pair, and eval pictures byte-equal to a
    training picture.

    Both splits are independent draws of one generator, so parts recur by design: a crop holds
    one object on a plain background (the same object crops alike in both splits), and a
    card question has few words. A recurring query *with its answer* would be a leak."""
    import pyarrow.parquet as pq

    from mmeb.revision import file_sha256

    report: dict[str, dict[str, int]] = {}
    train_root, eval_root = root / "train", root / "eval"
    for folder in sorted(p for p in eval_root.iterdir() if p.is_dir() and p.name != "eval_images"):
        name = folder.name
        train_images = {p.relative_to(train_root).as_posix(): file_sha256(p)
                        for p in (train_root / "images" / name).rglob("*.jpg")}
        eval_images = {p.relative_to(eval_root / "eval_images").as_posix(): file_sha256(p)
                       for p in (eval_root / "eval_images" / name).rglob("*.jpg")}
        queries: set[tuple[str, str]] = set()
        pairs: set[tuple[str, str, str, str]] = set()
        for path in sorted((train_root / name).glob("*.parquet")):
            rows = pq.read_table(path).to_pydict()
            for q, qi, t, ti in zip(rows["qry"], rows["qry_image_path"], rows["pos_text"],
                                    rows["pos_image_path"], strict=True):
                query = (_query_text(q), train_images.get(qi, ""))
                queries.add(query)
                pairs.add((*query, t.strip(), train_images.get(ti, "")))
        rows = pq.read_table(next(folder.glob("test-*.parquet"))).to_pydict()
        in_train = in_pairs = 0
        for q, qi, t, ti in zip(rows["qry_text"], rows["qry_img_path"], rows["tgt_text"],
                                rows["tgt_img_path"], strict=True):
            query = (_query_text(q), eval_images.get(qi, ""))
            in_train += query in queries
            in_pairs += (*query, t[0].strip(), eval_images.get(ti[0], "")) in pairs
        known = set(train_images.values())
        report[name] = {
            "eval_queries": len(rows["qry_text"]),
            "queries_in_train": in_train,
            "pairs_in_train": in_pairs,
            "eval_images": len(eval_images),
            "images_in_train": sum(d in known for d in eval_images.values()),
        }
    return report

