"""The local Qwen2.5-VL backend on a tiny randomly initialised model built offline.

The model, tokenizer, image processor and chat template are built here from configs, then go
through exactly the code path the released weights use (chat template, processor, generate,
next-token logits). Answers are random; what is checked is that the path runs end to end.
"""
import numpy as np
import pytest
import torch
from PIL import Image

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, decoders, models  # noqa: E402
from tokenizers.pre_tokenizers import ByteLevel  # noqa: E402
from transformers import (PreTrainedTokenizerFast, Qwen2_5_VLConfig,  # noqa: E402
                          Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor)

from grounding.vlm.base import Message  # noqa: E402
from grounding.vlm.qwen_backend import QwenConfig, QwenVLM, resolve_device, resolve_dtype  # noqa: E402

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
PIXELS = dict(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE over the 256 byte symbols plus "yes"/"no" merges and Qwen's special tokens."""
    vocab = {symbol: index for index, symbol in enumerate(sorted(ByteLevel.alphabet()))}
    merges = [("y", "e"), ("ye", "s"), ("n", "o"), ("Y", "e"), ("Ye", "s"), ("N", "o")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def tiny_processor(monkeypatch) -> Qwen2_5_VLProcessor:
    try:
        from transformers import Qwen2VLImageProcessor as ImageProcessor
        import torchvision  # noqa: F401  (the default image processor needs it)
    except ImportError:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import \
            Qwen2VLImageProcessorPil as ImageProcessor
        # Without torchvision transformers cannot resolve the video-processor class that the
        # processor checks its (absent) video processor against; images do not need it.
        monkeypatch.setattr(Qwen2_5_VLProcessor, "check_argument_for_proper_class", lambda self, name, value: None)
    return Qwen2_5_VLProcessor(image_processor=ImageProcessor(**PIXELS), tokenizer=tiny_tokenizer(),
                               chat_template=CHAT_TEMPLATE)


def tiny_model(tokenizer) -> Qwen2_5_VLForConditionalGeneration:
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 4]},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[1], window_size=56),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(config)


@pytest.fixture
def vlm(monkeypatch) -> QwenVLM:
    processor = tiny_processor(monkeypatch)
    return QwenVLM(tiny_model(processor.tokenizer), processor,
                   QwenConfig(model_id="tiny-random", max_new_tokens=4, **PIXELS))


def picture(seed: int, size=(90, 120)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def test_yes_no_probability_comes_from_the_next_token_logits(vlm):
    reply = vlm.yes_no([picture(0)], "Is the object outlined in magenta red?")
    assert 0.0 <= reply.probability <= 1.0
    assert reply.answer is None or reply.answer == (reply.probability >= 0.5)
    if reply.answer is None:  # a random model rarely puts its mass on yes/no
        assert "next-token probability" in reply.error
    assert vlm.yes_no([picture(0)], "Is the object outlined in magenta red?").probability == reply.probability


def test_yes_no_token_sets_are_distinct(vlm):
    assert vlm._yes_ids and vlm._no_ids and not (vlm._yes_ids & vlm._no_ids)


def test_ask_generates_text_for_several_images_and_a_dialogue(vlm):
    history = [Message("user", "Look at this.", [picture(1)]), Message("assistant", '{"action": "list_instances"}')]
    reply = vlm.ask([picture(2), picture(3, (60, 60))], "Describe the objects.", system="Be brief.", history=history)
    assert reply.error is None and isinstance(reply.text, str) and reply.seconds > 0


def test_device_and_dtype_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_images_are_resized_within_the_pixel_budget(vlm):
    inputs = vlm._inputs([picture(4, (400, 600))], "What is it?", None, [])
    (grid,) = inputs["image_grid_thw"].tolist()
    patches = grid[0] * grid[1] * grid[2]  # 14 x 14 patches; 28 x 28 pixels make 4 of them
    assert PIXELS["min_pixels"] <= patches * 14 * 14 <= PIXELS["max_pixels"]
    image_token = vlm.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((inputs["input_ids"] == image_token).sum()) == patches // 4
