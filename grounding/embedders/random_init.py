"""CLIP-family embedders with random weights, of a tiny or of the real base shape.

Where no weights can be downloaded, these prove the transformers route (shapes, batching, the text
side) in tests, and measure speed in benchmarks: the cost of a model does not depend on its weights.
The tokenizer is a word-level one built here (the real ones are files on the Hub); it splits on
spaces and punctuation and gives each known word its id, so texts are as long as real ones.
"""
from __future__ import annotations

from .transformers_embedder import ImageInput, TransformersEmbedder

WORDS = ("a", "photo", "of", "the", "an", "object", "wall", "floor", "background", "red", "green", "blue",
         "yellow", "chair", "table", "cube", "sphere", "mug", "something", "to", "sit", "on", ".")
SPECIAL = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def word_tokenizer(vocab_size: int | None = None):
    """A `PreTrainedTokenizerFast` over `WORDS` (ids beyond them unused up to ``vocab_size``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate((*SPECIAL, *WORDS))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]")
    fast.model_max_length = 64
    return fast


def random_embedder(kind: str = "clip", size: str = "tiny", device: str = "cpu", seed: int = 0,
                    batch_size: int = 32) -> TransformersEmbedder:
    """``kind`` "clip" (`CLIPModel`) or "siglip" (`SiglipModel`); ``size`` "tiny" (for tests) or "base"
    (the shape of the ViT-B/32 CLIPs, e.g. the default laion/CLIP-ViT-B-32-laion2B-s34B-b79K, and of
    google/siglip-base-patch16-224)."""
    import torch
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    if size not in ("tiny", "base") or kind not in ("clip", "siglip"):
        raise ValueError(f"unknown random embedder {kind!r} of size {size!r}")
    ids = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3)
    tiny = size == "tiny"
    text = dict(**(TINY if tiny else {}), **ids, vocab_size=len(SPECIAL) + len(WORDS) if tiny else None,
                max_position_embeddings=64)
    text = {k: v for k, v in text.items() if v is not None}
    vision = dict(**TINY, image_size=32, patch_size=8) if tiny else {}
    torch.manual_seed(seed)
    if kind == "clip":
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, **({"projection_dim": 16} if tiny else {})))
    else:
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    image_size = model.config.vision_config.image_size
    grey = (0.5, 0.5, 0.5)
    image_input = ImageInput(image_size, grey, grey) if kind == "siglip" else ImageInput(image_size)
    name = f"random-{kind}-{size}"
    return TransformersEmbedder(model, word_tokenizer(), image_input, name, device, batch_size)

