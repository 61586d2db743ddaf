"""The instance branch: an adaptor that lifts aggregator tokens to a feature pyramid, and a head
that fuses it coarse-to-fine while attending to the point head's geometry features.

Head (``part_head``), per view:
1. the coarsest level (h x w) attends globally to the point head's fused map G4
   (``cross_attention_2``; the attention output replaces the queries). The release also builds
   ``cross_attention_1`` for the 2h x 2w level against G3 but discards its output: its weights
   are kept (checkpoints load) and it is not computed, unless a model was trained with it
   (``IGGTConfig.apply_discarded_cross_attention``);
2. at 4h x 4w a shifted-window-style cross-attention (``window_cross_attention``, "SwinCA"):
   8x8 query windows attend to overlapping 12x12 key windows of the geometry map;
3. at 8h x 8w a window self-attention with a convolution branch (``window_self_atten``, "SwinSA");
4. upsample to the image size and project to ``output_dim`` raw channels (normalised downstream).

Parameter names follow the released checkpoint. Two slips of the release are reproduced
because the trained weights depend on them: SwinCA cuts its query windows from a channel-first
tensor as if it were channel-last (see `scrambled_query_windows`), and its relative position
index wraps negative values. The release fails when the patch grid has an odd side; here SwinCA
pads its 4h x 4w maps to multiples of 8 and crops back, which leaves even grids untouched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conv_blocks import DPTScratch, Projects, patch_tokens_to_map, resize_bilinear
from .dpt_head import OFFICIAL_LAYER_INDICES, OFFICIAL_OUT_CHANNELS, build_level_projections
from .layers import Mlp, attention, init_transformer_weights, patch_grid

WINDOW = 8
"""Side of the (query) attention windows of SwinCA and SwinSA."""
KEY_WINDOW = 12
"""Side of SwinCA's overlapping key windows (window plus 50 % overlap)."""
KEY_PADDING = (KEY_WINDOW - WINDOW) // 2
CONV_BRANCH_SCALE = 0.01
"""Weight of SwinSA's convolution branch relative to its attention branch."""

# Official widths and head sizes; smaller presets keep the head sizes and use fewer heads.
CROSS_ATTENTION_HEAD_DIM = 32
SWIN_CA_HEAD_DIM = 64
SWIN_SA_HEAD_DIM = 32
MLP_RATIO = 4
CAB_COMPRESSION = 3
CAB_SQUEEZE = 30
CAB_MIN_SQUEEZED = 4
"""Narrowest squeeze-excitation bottleneck (the official 128 // 30); one or two ReLU units die too easily."""


def head_count(width: int, head_dim: int) -> int:
    """Number of heads of about ``head_dim`` channels that divides ``width`` (at least one)."""
    heads = max(1, width // head_dim)
    while width % heads:
        heads -= 1
    return heads


def window_position_index(window: int = WINDOW) -> Tensor:
    """Swin relative position index ``[window^2, window^2]`` (int64, values 0 .. (2 window - 1)^2 - 1).

    Kept only because the checkpoint stores it (``relative_position_index_SA``); nothing reads it.
    """
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    dy = rows[None, :] - rows[:, None] + window - 1
    dx = cols[None, :] - cols[:, None] + window - 1
    return dy * (2 * window - 1) + dx


def overlapping_window_position_index(window: int = WINDOW, key_window: int = KEY_WINDOW) -> Tensor:
    """Relative position index ``[window^2, key_window^2]`` (int64) between a query window and
    its overlapping key window, as released: (ky - qy + shift) * span + (kx - qx + shift) with
    shift = window - key_window + 1 and span = window + key_window - 1.

    The shift does not make the values non-negative (for 8/12 they run from -200 to 160); the
    release indexes the bias table with them as they are, so negative entries wrap around the
    table (361 entries for 8/12, which makes the wrapped index a bijection onto the table).
    """
    shift = window - key_window + 1
    span = window + key_window - 1
    q_rows, q_cols = (c.reshape(-1) for c in torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    k_rows, k_cols = (
        c.reshape(-1) for c in torch.meshgrid(torch.arange(key_window), torch.arange(key_window), indexing="ij")
    )
    dy = k_rows[None, :] - q_rows[:, None] + shift
    dx = k_cols[None, :] - q_cols[:, None] + shift
    return dy * span + dx


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad ``[N, C, H, W]`` at the bottom and right, repeating the edge, to sides divisible by ``multiple``."""
    pad_h = -x.shape[2] % multiple
    pad_w = -x.shape[3] % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def to_tokens(x: Tensor) -> Tensor:
    """``[N, C, H, W]`` -> ``[N, H*W, C]`` (row-major)."""
    return x.flatten(2).transpose(1, 2)


def to_map(tokens: Tensor, size: tuple[int, int]) -> Tensor:
    """``[N, H*W, C]`` -> ``[N, C, H, W]``."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *size)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``[B, L, C]`` -> ``[B, heads, L, C / heads]``."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``[B, heads, L, D]`` -> ``[B, L, heads * D]``."""
    return x.transpose(1, 2).flatten(2)


def window_partition(tokens: Tensor, size: tuple[int, int], window: int = WINDOW) -> Tensor:
    """Channel-last ``[N, H*W, C]`` -> ``[N * nW, window^2, C]``, windows and their cells row-major."""
    n, _, c = tokens.shape
    h, w = size
    x = tokens.view(n, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_merge(windows: Tensor, size: tuple[int, int], window: int = WINDOW) -> Tensor:
    """Inverse of `window_partition`: ``[N * nW, window^2, C]`` -> ``[N, H*W, C]``."""
    h, w = size
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h * w, c)


def scrambled_query_windows(q_map: Tensor, window: int = WINDOW) -> Tensor:
    """SwinCA's query windows as the release cuts them: ``[N, C, H, W]`` -> ``[N * nW, window^2, C]``.

    The release hands the channel-first tensor to a window partition written for channel-last
    input, which reads (C, H, W) as (rows, columns, channels): it views the tensor as
    ``[N, C/8, 8, H/8, 8, W]``, swaps the second and third axes and reads the result as
    consecutive C-vectors, 64 per window. Window n still pairs with key window n; the trained
    weights expect exactly this scrambling.
    """
    n, c, h, w = q_map.shape
    x = q_map.reshape(n, c // window, window, h // window, window, w).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def key_windows(kv_map: Tensor) -> Tensor:
    """Overlapping key/value windows: ``[N, C, H, W]`` -> ``[N * nW, KEY_WINDOW^2, C]``.

    12x12 windows every 8 pixels with 2 pixels of zero padding; padded keys are plain zero
    vectors that still take part in the softmax (as released).
    """
    n, c = kv_map.shape[:2]
    patches = F.unfold(kv_map, kernel_size=KEY_WINDOW, stride=WINDOW, padding=KEY_PADDING)
    patches = patches.view(n, c, KEY_WINDOW * KEY_WINDOW, -1).permute(0, 3, 2, 1)
    return patches.reshape(-1, KEY_WINDOW * KEY_WINDOW, c)


class UnusedWeights(nn.Module):
    """Placeholder for released weights that the forward pass never reads.

    The released part head inherits a complete DPT front end (``norm``, ``projects``,
    ``resize_layers``) it never uses. Keeping the tensors as persistent buffers lets the official
    checkpoint load without unexpected keys, while no optimiser ever sees them.
    """

    def __init__(self, weight_shape: tuple[int, ...], bias_shape: tuple[int, ...]):
        super().__init__()
        self.register_buffer("weight", torch.zeros(weight_shape))
        self.register_buffer("bias", torch.zeros(bias_shape))


class UnusedCrossAttention(nn.Module):
    """``cross_attention_1`` as released: in the checkpoint, but its output is discarded.

    Holds `TokenCrossAttention`'s entries as `UnusedWeights`, so the official checkpoint loads
    entry for entry, no optimiser trains weights that cannot matter, and nothing is computed.
    """

    def __init__(self, width: int):
        super().__init__()
        for name in ("projq", "projk", "projv", "proj"):
            self.add_module(name, UnusedWeights((width, width), (width,)))


# --------------------------------------------------------------------------- adaptor


class InstanceAdaptor(nn.Module):
    """``part_adaptor``: four token levels -> feature maps A1..A4 at 4h, 2h, h and ceil(h/2).

    Like a DPT front end (shared LayerNorm, 1x1 projections), but without position embedding
    and with a batch-normalised residual projection (`Projects`) after each resampling.
    """

    def __init__(
        self,
        dim_in: int,
        features: int = 256,
        layer_indices: tuple[int, int, int, int] = OFFICIAL_LAYER_INDICES,
        patch_size: int = 14,
    ):
        super().__init__()
        if len(layer_indices) != 4:
            raise ValueError(f"the instance adaptor needs four layer indices, got {layer_indices}")
        self.layer_indices = tuple(layer_indices)
        self.patch_size = patch_size
        self.norm = nn.LayerNorm(dim_in)
        self.projects = build_level_projections(dim_in, (features,) * 4)

        def upsample_x2() -> nn.Module:
            return nn.ConvTranspose2d(features, features, kernel_size=4, stride=2, padding=1)

        self.resize_layers = nn.ModuleList(
            [
                nn.Sequential(upsample_x2(), Projects(features), upsample_x2(), Projects(features)),
                nn.Sequential(nn.ConvTranspose2d(features, features, kernel_size=2, stride=2), Projects(features)),
                nn.Sequential(nn.Identity(), Projects(features)),
                nn.Sequential(nn.Conv2d(features, features, kernel_size=3, stride=2, padding=1), Projects(features)),
            ]
        )

    def forward(self, tokens: dict[int, Tensor], image_hw: tuple[int, int], patch_start_idx: int) -> list[Tensor]:
        """``tokens[layer]`` ``[N, P, dim_in]`` -> [A1, A2, A3, A4], each ``[N, features, ., .]``."""
        grid_hw = patch_grid(image_hw, self.patch_size)
        return [
            resize(projection(patch_tokens_to_map(tokens[layer], patch_start_idx, grid_hw, self.norm)))
            for projection, resize, layer in zip(self.projects, self.resize_layers, self.layer_indices)
        ]


# --------------------------------------------------------------------------- attention modules


class TokenCrossAttention(nn.Module):
    """Global multi-head cross-attention from the pixels of one map to those of another
    (``cross_attention_1/2``). No norm, no position encoding and no residual: the output
    replaces the queries, as released."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.projq = nn.Linear(width, width)
        self.projk = nn.Linear(width, width)
        self.projv = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)

    def forward(self, query_map: Tensor, context_map: Tensor) -> Tensor:
        """``[N, C, h, w]`` queries attend to ``[N, C, h', w']`` context; returns ``[N, C, h, w]``."""
        context = to_tokens(context_map)
        q = split_heads(self.projq(to_tokens(query_map)), self.heads)
        k = split_heads(self.projk(context), self.heads)
        v = split_heads(self.projv(context), self.heads)
        return to_map(self.proj(merge_heads(attention(q, k, v))), query_map.shape[2:])


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: rescale channels by a gate computed from their global means."""

    def __init__(self, channels: int, squeeze: int = CAB_SQUEEZE):
        super().__init__()
        hidden = max(CAB_MIN_SQUEEZED, channels // squeeze)
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)


class ConvBranch(nn.Module):
    """SwinSA's convolution branch (``conv_block.cab``): conv, GELU, conv, channel attention."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(1, channels // CAB_COMPRESSION)
        self.cab = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, channels, kernel_size=3, padding=1),
            ChannelAttention(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.cab(x)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window (no relative position bias, as released)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, windows: Tensor) -> Tensor:
        """``[B, L, C]`` -> ``[B, L, C]``."""
        q, k, v = self.qkv(windows).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        return self.proj(merge_heads(attention(q, k, v)))


class HybridAttentionBlock(nn.Module):
    """SwinSA's block: window self-attention plus a lightly weighted convolution branch, then an MLP."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.conv_block = ConvBranch(width)
        self.attn = WindowAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, MLP_RATIO * width)

    def forward(self, tokens: Tensor, size: tuple[int, int]) -> Tensor:
        """``tokens`` ``[N, H*W, C]`` of an H x W map (sides multiples of the window)."""
        normed = self.norm1(tokens)
        conv = to_tokens(self.conv_block(to_map(normed, size)))
        attended = window_merge(self.attn(window_partition(normed, size)), size)
        x = tokens + attended + CONV_BRANCH_SCALE * conv
        return x + self.mlp(self.norm2(x))


class OverlappingCrossAttentionBlock(nn.Module):
    """SwinCA's block: 8x8 query windows attend to overlapping 12x12 key windows of another map,
    with a learned relative position bias; then an MLP."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((WINDOW + KEY_WINDOW - 1) ** 2, heads))
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, MLP_RATIO * width)

    def forward(self, query: Tensor, context: Tensor, size: tuple[int, int], position_index: Tensor) -> Tensor:
        """``query``/``context`` ``[N, H*W, C]`` of H x W maps (sides multiples of 8); ``position_index``
        ``[64, 144]`` raw (negative entries wrap around the bias table)."""
        context_normed = self.norm1(context)
        q = scrambled_query_windows(to_map(self.q(self.norm1(query)), size))
        k = key_windows(to_map(self.k(context_normed), size))
        v = key_windows(to_map(self.v(context_normed), size))
        table = self.relative_position_bias_table
        bias = table[position_index.remainder(table.shape[0])].permute(2, 0, 1)
        out = F.scaled_dot_product_attention(
            split_heads(q, self.heads), split_heads(k, self.heads), split_heads(v, self.heads), attn_mask=bias
        )
        x = self.proj(window_merge(merge_heads(out), size)) + query
        return x + self.mlp(self.norm2(x))


class WindowStage(nn.Module):
    """What SwinCA and SwinSA share around their attention block: an input LayerNorm
    (``patch_embed.norm``), an output LayerNorm, a 3x3 conv with a skip from the raw input, and two
    3x3 convs (``conv_before_upsample`` with LeakyReLU, ``conv_last``).

    Maps are padded (edge values repeated) to multiples of the window and cropped back, so any
    size works; sizes that are already multiples give the released numbers.
    """

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.patch_embed = nn.ModuleDict({"norm": nn.LayerNorm(width)})  # checkpoint name
        self.norm = nn.LayerNorm(width)
        self.conv_after_body = nn.Conv2d(width, width, kernel_size=3, padding=1)
        self.conv_before_upsample = nn.Sequential(
            nn.Conv2d(width, hidden, kernel_size=3, padding=1), nn.LeakyReLU(0.01)
        )
        self.conv_last = nn.Conv2d(hidden, width, kernel_size=3, padding=1)
        self.register_buffer("relative_position_index_SA", window_position_index())  # stored, never read

    def input_tokens(self, x: Tensor) -> Tensor:
        return self.patch_embed["norm"](to_tokens(x))

    def finish(self, tokens: Tensor, raw_input: Tensor) -> Tensor:
        """Block output tokens and the stage's (padded) input map -> output map ``[N, C, H, W]``."""
        x = self.conv_after_body(to_map(self.norm(tokens), raw_input.shape[2:])) + raw_input
        return self.conv_last(self.conv_before_upsample(x))


class WindowCrossAttention(WindowStage):
    """``window_cross_attention`` (SwinCA): instance features attend to geometry features locally."""

    def __init__(self, width: int, hidden: int):
        super().__init__(width, hidden)
        self.atten_block = OverlappingCrossAttentionBlock(width, head_count(width, SWIN_CA_HEAD_DIM))
        self.register_buffer("relative_position_index_OCA", overlapping_window_position_index())

    def forward(self, query_map: Tensor, context_map: Tensor) -> Tensor:
        """``[N, C, H, W]`` instance and geometry maps of equal size -> ``[N, C, H, W]``."""
        height, width = query_map.shape[2:]
        query_map = pad_to_multiple(query_map, WINDOW)
        context_map = pad_to_multiple(context_map, WINDOW)
        tokens = self.atten_block(
            self.input_tokens(query_map),
            self.input_tokens(context_map),
            query_map.shape[2:],
            self.relative_position_index_OCA,
        )
        return self.finish(tokens, query_map)[:, :, :height, :width]


class WindowSelfAttentionStage(WindowStage):
    """``window_self_atten`` (SwinSA): window self-attention with a convolution branch."""

    def __init__(self, width: int, hidden: int):
        super().__init__(width, hidden)
        self.atten_block = HybridAttentionBlock(width, head_count(width, SWIN_SA_HEAD_DIM))

    def forward(self, x: Tensor) -> Tensor:
        """``[N, C, H, W]`` -> ``[N, C, H, W]``."""
        height, width = x.shape[2:]
        x = pad_to_multiple(x, WINDOW)
        tokens = self.atten_block(self.input_tokens(x), x.shape[2:])
        return self.finish(tokens, x)[:, :, :height, :width]


# --------------------------------------------------------------------------- head


class InstanceHead(nn.Module):
    """``part_head``: adaptor levels + point-head geometry features -> raw per-pixel instance features."""

    def __init__(
        self,
        dim_in: int,
        features: int = 256,
        output_dim: int = 8,
        patch_size: int = 14,
        out_channels: tuple[int, int, int, int] = OFFICIAL_OUT_CHANNELS,
        apply_discarded_cross_attention: bool = False,
    ):
        super().__init__()
        self.apply_discarded_cross_attention = apply_discarded_cross_attention
        if features % WINDOW:
            raise ValueError(
                f"instance head features must be a multiple of {WINDOW} (SwinCA cuts its query windows "
                f"from groups of {WINDOW} channels), got {features}"
            )
        self.patch_size = patch_size
        c1, c2, c3, c4 = out_channels
        self.norm = UnusedWeights((dim_in,), (dim_in,))
        self.projects = nn.ModuleList([UnusedWeights((c, dim_in, 1, 1), (c,)) for c in (c1, c2, c3, c4)])
        self.resize_layers = nn.ModuleList(
            [
                UnusedWeights((c1, c1, 4, 4), (c1,)),
                UnusedWeights((c2, c2, 2, 2), (c2,)),
                nn.Identity(),
                UnusedWeights((c4, c4, 3, 3), (c4,)),
            ]
        )
        self.scratch = DPTScratch((features,) * 4, features, output_dim)
        heads = head_count(features, CROSS_ATTENTION_HEAD_DIM)
        self.cross_attention_2 = TokenCrossAttention(features, heads)
        self.cross_attention_1 = (TokenCrossAttention(features, heads) if apply_discarded_cross_attention
                                  else UnusedCrossAttention(features))
        self.window_cross_attention = WindowCrossAttention(features, hidden=features // 4)
        self.window_self_atten = WindowSelfAttentionStage(features // 2, hidden=features // 4)
        for stage in (self.window_cross_attention, self.window_self_atten):
            init_transformer_weights(stage)
        nn.init.trunc_normal_(self.window_cross_attention.atten_block.relative_position_bias_table, std=0.02)

    def forward(
        self, adaptor_levels: list[Tensor], point_features: tuple[Tensor, Tensor, Tensor], image_hw: tuple[int, int]
    ) -> Tensor:
        """A1..A4 from `InstanceAdaptor` and the point head's (G2, G3, G4) -> ``[N, output_dim, H, W]`` (raw)."""
        grid_h, grid_w = patch_grid(image_hw, self.patch_size)
        g2, g3, g4 = point_features
        scratch = self.scratch
        l1, l2, l3, l4 = scratch.project_levels(adaptor_levels)
        for name, geometry, level in (("G2", g2, l1), ("G3", g3, l2), ("G4", g4, l3)):
            if geometry.shape[1:] != level.shape[1:]:
                raise ValueError(
                    f"point feature {name} has shape {tuple(geometry.shape[1:])}, expected {tuple(level.shape[1:])} "
                    "(the point head's features must match the instance head's width and grid)"
                )
        x = self.cross_attention_2(scratch.refinenet4(l4, size=l3.shape[2:]), g4)
        x = scratch.refinenet3(x, l3, size=l2.shape[2:])
        if self.apply_discarded_cross_attention:
            # The release computes cross_attention_1(x, G3) here and never uses the result:
            # refinenet2 receives refinenet3's output unchanged. Computing it only to drop it
            # would waste a global attention per view, so the faithful path skips it; the weights
            # stay in the model so that official checkpoints load entry for entry.
            x = self.cross_attention_1(x, g3)
        x = self.window_cross_attention(scratch.refinenet2(x, l2, size=l1.shape[2:]), g2)
        x = self.window_self_atten(scratch.output_conv1(scratch.refinenet1(x, l1)))
        x = resize_bilinear(x, (grid_h * self.patch_size, grid_w * self.patch_size))
        return scratch.output_conv2(x)
