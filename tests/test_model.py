"""The IGGT network on the `tiny` preset: shapes, chunking, view equivariance, gradients, config."""
import math

import pytest
import torch

from iggt.checkpoints import read_config
from iggt.config import PRESETS, IGGTConfig
from iggt.geometry import pose_encoding_to_extrinsics_intrinsics
from iggt.model.iggt import IGGT, Predictions
from iggt.model.layers import Block, PatchEmbedder, RotaryEmbedding2D

DENSE_FIELDS = ("depth", "depth_conf", "world_points", "world_points_conf", "instance_features")


pytestmark = pytest.mark.usefixtures("single_thread")


def build(config: IGGTConfig, seed: int = 0) -> IGGT:
    torch.manual_seed(seed)
    return IGGT(config).eval()


@pytest.fixture(scope="module")
def tiny() -> IGGT:
    return build(IGGTConfig.from_preset("tiny"))


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def run(model: IGGT, x: torch.Tensor) -> Predictions:
    with torch.inference_mode():
        return model(x)


def assert_shapes(out: Predictions, batch: int, views: int, height: int, width: int) -> None:
    assert out.pose_enc.shape == (batch, views, 9)
    assert len(out.pose_enc_list) == 4 and all(p.shape == (batch, views, 9) for p in out.pose_enc_list)
    assert out.depth.shape == (batch, views, height, width, 1)
    assert out.depth_conf.shape == (batch, views, height, width)
    assert out.world_points.shape == (batch, views, height, width, 3)
    assert out.world_points_conf.shape == (batch, views, height, width)
    assert out.instance_features.shape == (batch, views, 8, height, width)
    assert out.extrinsics().shape == (batch, views, 3, 4)
    assert out.intrinsics().shape == (batch, views, 3, 3)
    for name in DENSE_FIELDS:
        assert torch.isfinite(getattr(out, name)).all(), name
    assert (out.depth > 0).all() and (out.depth_conf > 1).all() and (out.world_points_conf > 1).all()


@pytest.mark.parametrize(
    "shape",
    [(1, 3, 28, 42), (3, 3, 42, 28), (2, 1, 3, 28, 28), (1, 2, 3, 126, 98)],
    ids=["one-view", "three-views", "batch-of-two", "odd-grid-126x98"],
)
def test_output_shapes(tiny, shape):
    out = run(tiny, images(*shape))
    batch, views = (1, shape[0]) if len(shape) == 4 else shape[:2]
    assert_shapes(out, batch, views, *shape[-2:])


def test_cameras_come_from_the_last_pose_encoding(tiny):
    out = run(tiny, images(2, 3, 28, 42))
    assert out.pose_enc is out.pose_enc_list[-1]
    extrinsics, intrinsics = pose_encoding_to_extrinsics_intrinsics(out.pose_enc, (28, 42))
    torch.testing.assert_close(out.extrinsics(), extrinsics)
    torch.testing.assert_close(out.intrinsics(), intrinsics)


def test_batch_dimension_is_optional(tiny):
    x = images(2, 3, 28, 28)
    unbatched, batched = run(tiny, x), run(tiny, x[None])
    for name in ("pose_enc",) + DENSE_FIELDS:
        torch.testing.assert_close(getattr(unbatched, name), getattr(batched, name))


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(2, 3, 30, 28), "multiple of the patch size"),
        (torch.rand(2, 4, 28, 28), r"\[B, S, 3, H, W\]"),
        (torch.rand(3, 28, 28), r"\[B, S, 3, H, W\]"),
        (torch.zeros(2, 3, 28, 28, dtype=torch.uint8), "float"),
    ],
)
def test_bad_input_is_rejected_clearly(tiny, bad, message):
    with pytest.raises(ValueError, match=message):
        tiny(bad)


def test_chunked_heads_match_one_pass_and_handle_many_views(tiny):
    """13 views (more than the released model's 12) in chunks of 2 equal one chunk of 13."""
    config = tiny.config
    chunked = build(config.replace(frames_chunk_size=2))
    chunked.load_state_dict(tiny.state_dict())
    whole = build(config.replace(frames_chunk_size=13))
    whole.load_state_dict(tiny.state_dict())
    x = images(13, 3, 28, 28, seed=1)
    a, b = run(chunked, x), run(whole, x)
    assert_shapes(a, 1, 13, 28, 28)
    for name in ("pose_enc",) + DENSE_FIELDS:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-4)


def test_permuting_other_views_permutes_outputs_and_keeps_the_reference_view(tiny):
    x = images(4, 3, 28, 42, seed=2)
    order = torch.tensor([0, 3, 1, 2])
    original, permuted = run(tiny, x), run(tiny, x[order])
    for name in ("pose_enc",) + DENSE_FIELDS:
        expected = getattr(original, name)[:, order]
        torch.testing.assert_close(getattr(permuted, name), expected, atol=1e-4, rtol=1e-4, msg=name)


def test_the_reference_view_is_special(tiny):
    """Swapping view 0 with another view changes the answer (slot-0 tokens mark the reference)."""
    x = images(3, 3, 28, 28, seed=3)
    original, swapped = run(tiny, x), run(tiny, x[[1, 0, 2]])
    assert not torch.allclose(original.pose_enc[:, [1, 0, 2]], swapped.pose_enc, atol=1e-6)


def test_gradient_reaches_every_trainable_parameter():
    model = build(IGGTConfig.from_preset("tiny")).train()
    out = model(images(1, 2, 3, 28, 28, seed=4))
    loss = sum(p.square().mean() for p in out.pose_enc_list)
    loss = loss + sum(getattr(out, name).log().mean() if name != "world_points" else getattr(out, name).mean()
                      for name in DENSE_FIELDS if name != "instance_features")
    loss = loss + out.instance_features.square().mean()
    loss.backward()
    without = [name for name, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert without == []


def test_residual_stream_and_heads_stay_fp32_under_cpu_autocast(tiny):
    x = images(2, 3, 28, 28)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny(x)
        layers = tiny.aggregator(x[None])
    for name in ("pose_enc",) + DENSE_FIELDS:
        assert getattr(out, name).dtype == torch.float32, name
    assert all(layer.dtype == torch.float32 for layer in layers.values())


@pytest.mark.parametrize("dtype, pose_bound, dense_bound", [(torch.bfloat16, 5e-2, 5e-3), (torch.float16, 1e-2, 1e-3)])
def test_reduced_precision_autocast_stays_close_to_fp32(tiny, dtype, pose_bound, dense_bound):
    """The aggregator follows the autocast (its output moves), the heads compute in fp32: every
    output stays within a bound of the fp32 forward (relative to the output's largest value)."""
    x = images(3, 3, 56, 84)
    with torch.inference_mode():
        reference = tiny(x)
        with torch.autocast("cpu", dtype=dtype):
            reduced = tiny(x)
    differences = {name: float((getattr(reduced, name) - getattr(reference, name)).abs().max()
                               / getattr(reference, name).abs().max()) for name in ("pose_enc",) + DENSE_FIELDS}
    assert differences["pose_enc"] < pose_bound, differences
    assert all(differences[name] < dense_bound for name in DENSE_FIELDS), differences
    assert max(differences.values()) > 0  # the autocast did apply


def test_the_aggregator_returns_only_the_layers_asked_for(tiny):
    x = images(2, 3, 28, 28)[None]
    with torch.inference_mode():
        assert tiny.aggregator(x, layers=()) == {}
        assert list(tiny.aggregator(x, layers=(0,))) == [0]


def test_block_norm_eps_reaches_every_layer_norm_including_the_qk_norm():
    block = Block(32, 2, qk_norm=True, norm_eps=1e-6)
    norms = [m for m in block.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 4 and {m.eps for m in norms} == {1e-6}


def test_gradient_checkpointing_gives_the_same_gradients(tiny):
    x = images(1, 2, 3, 28, 28, seed=6)
    gradients, block_calls = [], []
    for enabled in (False, True):
        model = build(tiny.config.replace(gradient_checkpointing=enabled)).train()
        model.load_state_dict(tiny.state_dict())
        calls = []
        model.aggregator.frame_blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
        model(x).depth.mean().backward()
        gradients.append(model.aggregator.frame_blocks[0].attn.qkv.weight.grad)
        block_calls.append(len(calls))
    torch.testing.assert_close(gradients[0], gradients[1])
    assert block_calls == [1, 2]  # checkpointing recomputes the block in the backward pass


# ----------------------------------------------------------------------------- layers


def test_rope_leaves_special_tokens_alone_and_depends_on_relative_position():
    rope = RotaryEmbedding2D(base=100.0)
    generator = torch.Generator().manual_seed(5)
    q, k = torch.randn(1, 2, 1, 16, generator=generator), torch.randn(1, 2, 1, 16, generator=generator)
    origin = torch.zeros(1, 1, 2, dtype=torch.long)
    torch.testing.assert_close(rope(q, origin), q)

    def score(pq: tuple[int, int], pk: tuple[int, int]) -> torch.Tensor:
        return (rope(q, torch.tensor([[pq]])) * rope(k, torch.tensor([[pk]]))).sum()

    torch.testing.assert_close(score((2, 3), (5, 1)), score((4, 7), (7, 5)), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score((2, 3), (5, 1)), score((2, 3), (1, 5)))


def test_rope_rotates_rows_in_the_first_half_with_half_split_pairs():
    # Head dim 8: rows rotate channels 0..3 as pairs (0, 2) and (1, 3) with frequencies 1 and 1/10.
    rope = RotaryEmbedding2D(base=100.0)
    x = torch.zeros(1, 1, 1, 8)
    x[..., 0] = 1.0
    rotated = rope(x, torch.tensor([[[2, 0]]]))
    expected = torch.zeros(8)
    expected[0], expected[2] = math.cos(2.0), math.sin(2.0)
    torch.testing.assert_close(rotated.flatten(), expected)


def test_position_table_is_resized_only_when_the_grid_differs():
    embedder = PatchEmbedder(img_size=56, patch_size=14, embed_dim=16, depth=1, num_heads=2)
    torch.nn.init.normal_(embedder.pos_embed)
    same = embedder.position_embedding((4, 4), torch.float32)
    torch.testing.assert_close(same, embedder.pos_embed)
    other = embedder.position_embedding((2, 3), torch.float32)
    assert other.shape == (1, 1 + 6, 16)
    torch.testing.assert_close(other[:, :1], embedder.pos_embed[:, :1])


# ----------------------------------------------------------------------------- config


def test_presets_and_their_sizes():
    assert set(PRESETS) == {"iggt-1b", "small", "tiny"}
    with pytest.raises(ValueError, match="available presets: iggt-1b, small, tiny"):
        IGGTConfig.from_preset("huge")
    sizes = {}
    for name in ("tiny", "small"):
        with torch.device("meta"):
            model = IGGT(IGGTConfig.from_preset(name))
        sizes[name] = sum(p.numel() for p in model.parameters())
    assert 2e6 <= sizes["tiny"] <= 5e6
    assert 10e6 <= sizes["small"] <= 25e6


def test_config_round_trips_through_json(tmp_path):
    config = IGGTConfig.from_preset("small").replace(frames_chunk_size=3)
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    assert read_config(path) == config
    assert IGGTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown IGGTConfig fields: colour"):
        IGGTConfig.from_dict({**config.to_dict(), "colour": 1})


def test_invalid_config_names_the_problem():
    with pytest.raises(ValueError, match="head_layer_indices"):
        IGGTConfig.from_preset("tiny").replace(head_layer_indices=(0, 1, 2, 9))
    with pytest.raises(ValueError, match="not divisible"):
        IGGTConfig.from_preset("tiny").replace(num_heads=5)


def test_forward_runs_on_the_meta_device_for_shape_and_flop_analysis():
    with torch.device("meta"):
        model = IGGT(IGGTConfig.from_preset("tiny")).eval()
        model.aggregator.restore_constants("meta")
        out = model(torch.empty(2, 3, 28, 42))
    assert out.depth.is_meta and out.instance_features.shape == (1, 2, 8, 28, 42)
