"""The local Qwen2.5-VL and Qwen3-VL backend on tiny randomly initialised models built offline.

The models, tokenizer, image processors and chat template are built here from configs of the real
classes, then go through exactly the code path the released weights use (chat template,
processor, generate, next-token logits). Answers are random; what is checked is that the path
runs end to end, and that on ZeroGPU (a stand-in `spaces` module) every forward pass runs inside
a ``spaces.GPU`` call that puts the weights on the device first.
"""
import sys
import threading
import types

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
from grounding.vlm.qwen_backend import (QWEN3_MODEL_ID, QwenConfig, QwenVLM, local_models, qwen3_available,  # noqa: E402
                                        resolve_device, resolve_dtype, zero_gpu)

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


def tiny_processor(monkeypatch, processor_class=Qwen2_5_VLProcessor, **image_options):
    try:
        from transformers import Qwen2VLImageProcessor as ImageProcessor
        import torchvision  # noqa: F401  (the default image processor needs it)
    except ImportError:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import \
            Qwen2VLImageProcessorPil as ImageProcessor
        # Without torchvision transformers cannot resolve the video-processor class that the
        # processor checks its (absent) video processor against; images do not need it.
        monkeypatch.setattr(processor_class, "check_argument_for_proper_class", lambda self, name, value: None)
    return processor_class(image_processor=ImageProcessor(**{**PIXELS, **image_options}),
                           tokenizer=tiny_tokenizer(), chat_template=CHAT_TEMPLATE)


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


# -- ZeroGPU ---------------------------------------------------------------------------------

class StandInSpaces(types.ModuleType):
    """The `spaces` package as ZeroGPU has it: ``spaces.GPU(duration=...)`` decorates a function whose
    calls hold a GPU; the stand-in records the durations and whether a call is running."""

    def __init__(self):
        super().__init__("spaces")
        self.durations: list[int] = []
        self.inside = threading.local()

    def GPU(self, duration: int = 60):  # noqa: N802 (the real package's name)
        self.durations.append(duration)

        def decorate(function):
            def in_a_gpu_call(*args, **kwargs):
                self.inside.value = True
                try:
                    return function(*args, **kwargs)
                finally:
                    self.inside.value = False
            return in_a_gpu_call
        return decorate

    def in_call(self) -> bool:
        return getattr(self.inside, "value", False)


def test_on_zero_gpu_every_forward_pass_runs_in_a_gpu_call_that_places_the_weights(monkeypatch):
    spaces = StandInSpaces()
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    assert resolve_device("auto", on_zero_gpu=True).type == "cuda"  # the GPU a decorated call gets
    assert resolve_dtype("auto", torch.device("cuda"), on_zero_gpu=True) == torch.bfloat16  # without asking it
    gpu_call = zero_gpu(45)
    assert spaces.durations == [45]

    processor = tiny_processor(monkeypatch)
    model = tiny_model(processor.tokenizer)
    moves, seen = [], []
    original_to = model.to
    monkeypatch.setattr(model, "to", lambda *args, **kwargs: (moves.append(spaces.in_call()),
                                                               original_to(*args, **kwargs))[1])
    model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((spaces.in_call(), kwargs["input_ids"].device.type)),
        with_kwargs=True)
    vlm = QwenVLM(model, processor, QwenConfig(model_id="tiny-random", max_new_tokens=2, **PIXELS),
                  device=torch.device("cpu"), gpu_call=gpu_call)
    vlm.yes_no([picture(0)], "Is the object outlined in magenta red?")
    vlm.ask([picture(1)], "What is it?")
    assert seen and all(inside and device == "cpu" for inside, device in seen)
    assert moves and all(moves), "the weights go to the device inside each GPU call, and only there"


def test_without_spaces_there_is_no_gpu_call(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError
    assert zero_gpu(60) is None
    assert resolve_device("cpu", on_zero_gpu=False).type == "cpu"


# -- Qwen3-VL --------------------------------------------------------------------------------

@pytest.fixture
def qwen3(monkeypatch) -> QwenVLM:
    if not qwen3_available():
        pytest.skip("the installed transformers has no Qwen3-VL")
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    processor = tiny_processor(monkeypatch, Qwen3VLProcessor, patch_size=16, merge_size=2,
                               min_pixels=4 * 32 * 32, max_pixels=16 * 32 * 32)
    tokenizer = processor.tokenizer
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                                          "mrope_interleaved": True},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=16, spatial_merge_size=2, num_position_embeddings=64,
                           deepstack_visual_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(config)
    return QwenVLM(model, processor, QwenConfig(model_id=QWEN3_MODEL_ID, max_new_tokens=4,
                                                min_pixels=4 * 32 * 32, max_pixels=16 * 32 * 32))


def test_qwen3_vl_is_a_second_local_choice_with_the_same_yes_no_path(qwen3):
    assert QWEN3_MODEL_ID in local_models()
    reply = qwen3.yes_no([picture(5)], "Is the object outlined in magenta red?")
    assert 0.0 <= reply.probability <= 1.0
    assert reply.answer is None or reply.answer == (reply.probability >= 0.5)
    text = qwen3.ask([picture(6)], "Describe it.", history=[Message("user", "Look.", [picture(7)])])
    assert text.error is None and isinstance(text.text, str)
    (grid,) = qwen3._inputs([picture(8, (400, 600))], "What is it?", None, [])["image_grid_thw"].tolist()
    assert 4 * 32 * 32 <= grid[1] * grid[2] * 16 * 16 <= 16 * 32 * 32  # 16-pixel patches, 32-pixel merges
