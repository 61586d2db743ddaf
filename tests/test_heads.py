"""Tests of the dense heads and the instance branch (small widths, CPU, fast)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from iggt.model.conv_blocks import ResidualConvUnit, add_position_embedding, position_embedding
from iggt.model.dpt_head import DPTHead, activate
from iggt.model.instance_head import (
    InstanceAdaptor,
    InstanceHead,
    OverlappingCrossAttentionBlock,
    head_count,
    key_windows,
    overlapping_window_position_index,
    scrambled_query_windows,
    window_merge,
    window_partition,
    window_position_index,
)

STATE_DICT_JSON = Path(__file__).resolve().parent / "data" / "iggt-official-state-dict.json"

DIM_IN = 48
FEATURES = 32
OUT_CHANNELS = (16, 32, 64, 64)
LAYERS = (0, 1, 2, 3)
PATCH = 14
SPECIAL_TOKENS = 5


class SmallHeads(torch.nn.Module):
    """The four heads wired as IGGT wires them, at small widths."""

    def __init__(self):
        super().__init__()
        dense = dict(patch_size=PATCH, features=FEATURES, out_channels=OUT_CHANNELS, layer_indices=LAYERS)
        self.depth_head = DPTHead(DIM_IN, output_dim=2, activation="exp", **dense)
        self.point_head = DPTHead(DIM_IN, output_dim=4, activation="inv_log", return_features=True, **dense)
        self.part_adaptor = InstanceAdaptor(DIM_IN, features=FEATURES, layer_indices=LAYERS)
        self.part_head = InstanceHead(DIM_IN, features=FEATURES, patch_size=PATCH, out_channels=OUT_CHANNELS)

    def forward(self, tokens: dict[int, torch.Tensor], image_hw: tuple[int, int]):
        depth = self.depth_head(tokens, image_hw, SPECIAL_TOKENS)
        points = self.point_head(tokens, image_hw, SPECIAL_TOKENS)
        levels = self.part_adaptor(tokens, image_hw, SPECIAL_TOKENS)
        return depth, points, levels, self.part_head(levels, points.features, image_hw)


def make_tokens(frames: int, grid_hw: tuple[int, int], seed: int = 0) -> dict[int, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    count = SPECIAL_TOKENS + grid_hw[0] * grid_hw[1]
    return {layer: torch.randn(frames, count, DIM_IN, generator=generator) for layer in LAYERS}


@pytest.fixture(scope="module")
def heads() -> SmallHeads:
    torch.manual_seed(0)
    return SmallHeads().eval()


# --------------------------------------------------------------------------- shapes and wiring


@pytest.mark.parametrize("frames, grid_hw", [(1, (3, 5)), (2, (4, 6)), (3, (9, 7)), (1, (1, 1))])
def test_output_shapes_for_even_and_odd_grids(heads, frames, grid_hw):
    h, w = grid_hw
    image_hw = (h * PATCH, w * PATCH)
    with torch.no_grad():
        depth, points, levels, instance = heads(make_tokens(frames, grid_hw), image_hw)
    assert depth.values.shape == (frames, *image_hw, 1)
    assert depth.confidence.shape == (frames, *image_hw)
    assert depth.features is None
    assert points.values.shape == (frames, *image_hw, 3)
    assert points.confidence.shape == (frames, *image_hw)
    assert [tuple(g.shape) for g in points.features] == [
        (frames, FEATURES, 4 * h, 4 * w),
        (frames, FEATURES, 2 * h, 2 * w),
        (frames, FEATURES, h, w),
    ]
    assert [tuple(a.shape[2:]) for a in levels] == [(4 * h, 4 * w), (2 * h, 2 * w), (h, w), (-(-h // 2), -(-w // 2))]
    assert instance.shape == (frames, 8, *image_hw)
    assert bool((depth.values > 0).all()) and bool((depth.confidence > 1).all())
    assert bool(torch.isfinite(instance).all())


def test_frames_are_independent(heads):
    """Frame 0's outputs must not change when frame 1's input does (no cross-frame mixing)."""
    tokens = make_tokens(2, (4, 6), seed=1)
    changed = {layer: t.clone() for layer, t in tokens.items()}
    noise = torch.Generator().manual_seed(2)
    for t in changed.values():  # not a constant shift: the heads' LayerNorms would remove it
        t[1] += torch.randn(t[1].shape, generator=noise)
    with torch.no_grad():
        a = heads(tokens, (56, 84))
        b = heads(changed, (56, 84))
    torch.testing.assert_close(a[0].values[0], b[0].values[0])
    torch.testing.assert_close(a[1].values[0], b[1].values[0])
    torch.testing.assert_close(a[3][0], b[3][0])
    assert not torch.allclose(a[3][1], b[3][1])


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = SmallHeads().train()
    depth, points, _, instance = model(make_tokens(2, (2, 3)), (28, 42))
    loss = depth.values.mean() + depth.confidence.mean() + points.values.mean() + points.confidence.mean()
    loss = loss + instance.square().mean()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} gets no gradient"
        assert bool(torch.isfinite(parameter.grad).all()), name
        assert bool(parameter.grad.abs().sum() > 0), f"{name} has an all-zero gradient"


def test_bad_sizes_are_reported(heads):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        heads.depth_head(make_tokens(1, (2, 2)), (30, 28), SPECIAL_TOKENS)
    with pytest.raises(ValueError, match="patch tokens"):
        heads.depth_head(make_tokens(1, (2, 2)), (42, 28), SPECIAL_TOKENS)
    with pytest.raises(ValueError, match="activation"):
        DPTHead(DIM_IN, output_dim=2, activation="relu")
    with pytest.raises(ValueError, match="divisible"):
        DPTHead(DIM_IN, output_dim=2, activation="exp", features=36)
    with pytest.raises(ValueError, match="multiple of 8"):
        InstanceHead(DIM_IN, features=36)


# --------------------------------------------------------------------------- official state dict


def test_official_state_dict_names_and_shapes():
    reference = json.loads(STATE_DICT_JSON.read_text())
    with torch.device("meta"):
        modules = {
            "depth_head": DPTHead(2048, output_dim=2, activation="exp"),
            "point_head": DPTHead(2048, output_dim=4, activation="inv_log", return_features=True),
            "part_adaptor": InstanceAdaptor(2048),
            "part_head": InstanceHead(2048),
        }
    for prefix, module in modules.items():
        ours = {f"{prefix}.{k}": list(v.shape) for k, v in module.state_dict().items()}
        expected = {k: v for k, v in reference.items() if k.startswith(prefix + ".")}
        missing, extra = sorted(set(expected) - set(ours)), sorted(set(ours) - set(expected))
        assert ours == expected, f"{prefix}: missing {missing[:5]}, extra {extra[:5]}"
    int64 = {f"{p}.{k}" for p, m in modules.items() for k, v in m.state_dict().items() if v.dtype == torch.int64}
    assert len(int64) == 18
    assert "part_head.window_cross_attention.relative_position_index_OCA" in int64
    # Numbers from the reference (section 2): the dead part-head weights (the inherited DPT front
    # end, and cross_attention_1, whose output the release discards) are buffers, not parameters.
    part_head = modules["part_head"]
    assert sum(v.numel() for v in part_head.state_dict().values()) == 31_339_386
    discarded_attention = 4 * (256 * 256 + 256)
    assert sum(p.numel() for p in part_head.parameters()) == 31_321_978 - 17_310_208 - discarded_attention
    assert sum(p.numel() for p in modules["depth_head"].parameters()) == 32_654_562
    assert sum(p.numel() for p in modules["part_adaptor"].parameters()) == 11_614_976


@pytest.mark.slow
@pytest.mark.parametrize("grid_hw", [(2, 4), (3, 3)])
def test_official_widths_run_on_even_and_odd_grids(grid_hw):
    torch.manual_seed(0)
    point_head = DPTHead(2048, output_dim=4, activation="inv_log", return_features=True).eval()
    adaptor, head = InstanceAdaptor(2048).eval(), InstanceHead(2048).eval()
    tokens = {layer: torch.randn(2, SPECIAL_TOKENS + grid_hw[0] * grid_hw[1], 2048) for layer in (4, 11, 17, 23)}
    image_hw = (grid_hw[0] * PATCH, grid_hw[1] * PATCH)
    with torch.no_grad():
        points = point_head(tokens, image_hw, SPECIAL_TOKENS)
        features = head(adaptor(tokens, image_hw, SPECIAL_TOKENS), points.features, image_hw)
    assert features.shape == (2, 8, *image_hw) and bool(torch.isfinite(features).all())


def test_head_counts_follow_the_width():
    assert head_count(256, 32) == 8 and head_count(256, 64) == 4 and head_count(128, 32) == 4
    assert head_count(32, 64) == 1 and head_count(48, 32) == 1 and head_count(96, 32) == 3


# --------------------------------------------------------------------------- released quirks


def test_residual_conv_unit_adds_relu_of_its_input():
    unit = ResidualConvUnit(1)
    with torch.no_grad():
        for conv, gain in ((unit.conv1, 1.0), (unit.conv2, 2.0)):
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = gain
            conv.bias.zero_()
    x = torch.tensor([[[[-2.0, 1.0], [3.0, -0.5]]]])
    # relu(x) + 2 * relu(relu(x)) = 3 relu(x); a plain skip would give x + 2 relu(x).
    torch.testing.assert_close(unit(x), torch.tensor([[[[0.0, 3.0], [9.0, 0.0]]]]))


def test_position_embedding_matches_the_formula():
    grid_h, grid_w, image_hw, channels = 2, 3, (28, 42), 8
    aspect = 42 / 28
    span_x = aspect / math.sqrt(aspect**2 + 1) * (grid_w - 1) / grid_w
    span_y = 1 / math.sqrt(aspect**2 + 1) * (grid_h - 1) / grid_h
    xs, ys = [-span_x, 0.0, span_x], [-span_y, span_y]
    omegas = [1.0, 100 ** (-1 / 2)]  # 100^(-k / (D/4)), D/4 = 2
    expected = torch.zeros(channels, grid_h, grid_w, dtype=torch.float64)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            row = [math.sin(x * o) for o in omegas] + [math.cos(x * o) for o in omegas]
            row += [math.sin(y * o) for o in omegas] + [math.cos(y * o) for o in omegas]
            expected[:, i, j] = torch.tensor(row)
    ours = position_embedding(channels, (grid_h, grid_w), image_hw)
    torch.testing.assert_close(ours, expected.float(), atol=1e-6, rtol=0)
    zeros = torch.zeros(2, channels, grid_h, grid_w)
    torch.testing.assert_close(add_position_embedding(zeros, image_hw), 0.1 * expected.float().expand(2, -1, -1, -1))


def test_activations():
    raw = torch.tensor([-1.0, 0.0, 2.0, 0.5]).view(1, 4, 1, 1)
    values, confidence = activate(raw, "inv_log")
    torch.testing.assert_close(values.flatten(), torch.tensor([-(math.e - 1), 0.0, math.e**2 - 1]))
    torch.testing.assert_close(confidence.flatten(), torch.tensor([1 + math.exp(0.5)]))
    values, _ = activate(raw, "exp")
    torch.testing.assert_close(values.flatten(), torch.tensor([math.exp(-1), 1.0, math.exp(2)]))


def test_query_windows_follow_the_released_layout_slip():
    """Reference: read the [N, C/8, H/8, 8, 8, W] reordering element by element."""
    n, c, h, w = 2, 16, 16, 8
    q_map = torch.randn(n, c, h, w)
    ours = scrambled_query_windows(q_map)
    windows_per_frame = (h // 8) * (w // 8)
    assert ours.shape == (n * windows_per_frame, 64, c)
    expected = torch.empty_like(ours)
    radices = (c // 8, h // 8, 8, 8, w)  # channel block, row block, channel in block, row in block, column
    for b in range(n):
        for flat in range(c * h * w):
            digits, rest = [], flat
            for radix in reversed(radices):
                digits.append(rest % radix)
                rest //= radix
            col, row_in, chan_in, row_block, chan_block = digits
            window, token, channel = flat // (64 * c), (flat // c) % 64, flat % c
            source = q_map[b, chan_block * 8 + chan_in, row_block * 8 + row_in, col]
            expected[b * windows_per_frame + window, token, channel] = source
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    correct = window_partition(q_map.flatten(2).transpose(1, 2), (h, w))
    assert not torch.equal(ours, correct)


def test_window_partition_and_merge():
    n, c, h, w = 2, 3, 16, 24
    tokens = torch.randn(n, h * w, c)
    windows = window_partition(tokens, (h, w))
    grid = tokens.view(n, h, w, c)
    for b in range(n):
        for by in range(h // 8):
            for bx in range(w // 8):
                index = b * (h // 8) * (w // 8) + by * (w // 8) + bx
                cell = grid[b, by * 8 : by * 8 + 8, bx * 8 : bx * 8 + 8].reshape(64, c)
                torch.testing.assert_close(windows[index], cell)
    torch.testing.assert_close(window_merge(windows, (h, w)), tokens)


def test_relative_position_indices():
    index = overlapping_window_position_index()
    assert index.shape == (64, 144) and index.dtype == torch.int64
    assert int(index.min()) == -200 and int(index.max()) == 160
    # query cell (qy, qx) = t // 8, t % 8; key cell (ky, kx) = s // 12, s % 12
    assert int(index[0, 0]) == (0 - 0 - 3) * 19 + (0 - 0 - 3) == -60
    assert int(index[63, 0]) == (0 - 7 - 3) * 19 + (0 - 7 - 3) == -200
    assert int(index[0, 143]) == (11 - 3) * 19 + (11 - 3) == 160
    assert int(index[9, 2 * 12 + 5]) == (2 - 1 - 3) * 19 + (5 - 1 - 3) == -37
    assert len(set(index.remainder(361).flatten().tolist())) == 361
    self_index = window_position_index()
    assert self_index.shape == (64, 64) and self_index.dtype == torch.int64
    assert int(self_index[0, 0]) == 7 * 15 + 7 and int(self_index[63, 0]) == 0 and int(self_index.max()) == 224


def test_key_windows_are_zero_padded_overlapping_crops():
    n, c, h, w = 1, 2, 16, 16
    kv = torch.randn(n, c, h, w)
    windows = key_windows(kv)
    assert windows.shape == (4, 144, c)
    padded = F.pad(kv, (2, 2, 2, 2))
    for by in range(2):
        for bx in range(2):
            crop = padded[0, :, by * 8 : by * 8 + 12, bx * 8 : bx * 8 + 12].reshape(c, 144).T
            torch.testing.assert_close(windows[by * 2 + bx], crop)


def test_overlapping_cross_attention_block_matches_a_loop_reference():
    torch.manual_seed(0)
    n, c, heads, h, w = 1, 16, 2, 16, 8
    block = OverlappingCrossAttentionBlock(c, heads).eval()
    with torch.no_grad():
        block.relative_position_bias_table.normal_()
    query, context = torch.randn(n, h * w, c), torch.randn(n, h * w, c)
    index = overlapping_window_position_index()
    with torch.no_grad():
        ours = block(query, context, (h, w), index)
        q = scrambled_query_windows(block.q(block.norm1(query)).transpose(1, 2).reshape(n, c, h, w))
        k_map = F.pad(block.k(block.norm1(context)).transpose(1, 2).reshape(n, c, h, w), (2, 2, 2, 2))
        v_map = F.pad(block.v(block.norm1(context)).transpose(1, 2).reshape(n, c, h, w), (2, 2, 2, 2))
        attended = torch.zeros(n, h, w, c)
        d = c // heads
        for window in range(q.shape[0]):
            by, bx = divmod(window, w // 8)
            keys = k_map[0, :, by * 8 : by * 8 + 12, bx * 8 : bx * 8 + 12].reshape(c, 144).T
            values = v_map[0, :, by * 8 : by * 8 + 12, bx * 8 : bx * 8 + 12].reshape(c, 144).T
            for t in range(64):
                qy, qx = divmod(t, 8)
                bias_rows = [((s // 12 - qy - 3) * 19 + (s % 12 - qx - 3)) % 361 for s in range(144)]
                for head in range(heads):
                    part = slice(head * d, (head + 1) * d)
                    logits = keys[:, part] @ q[window, t, part] / math.sqrt(d)
                    logits = logits + block.relative_position_bias_table[bias_rows, head]
                    attended[0, by * 8 + t // 8, bx * 8 + t % 8, part] = torch.softmax(logits, 0) @ values[:, part]
        x = block.proj(attended.reshape(n, h * w, c)) + query
        expected = x + block.mlp(block.norm2(x))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
