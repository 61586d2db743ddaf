"""The aggregator: per-image patch tokens, then alternating frame and global attention.

Each view becomes ``[camera, registers..., patches...]``. Frame blocks attend within one view,
global blocks across all views of a batch element, so geometry and instance identity can be
shared between views. The reference view (view 0) is marked only by using slot 0 of the
learned camera/register tokens; all other views use slot 1, which makes the network
equivariant to permutations of views 1..S-1.

With ``config.merge_ratio > 0`` the global blocks attend over merged tokens
(`iggt.model.token_merge`, training-free, off by default).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..config import IGGTConfig
from .layers import AttentionWrapper, Block, PatchEmbedder, RotaryEmbedding2D, init_transformer_weights, patch_grid
from .token_merge import GlobalTokenMerger, TokenLayout

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Aggregator(nn.Module):
    """Images ``[B, S, 3, H, W]`` in [0, 1] -> the token layers the heads read."""

    def __init__(self, config: IGGTConfig):
        super().__init__()
        self.config = config
        self.patch_start_idx = 1 + config.num_register_tokens
        self.patch_embed = PatchEmbedder(
            img_size=config.img_size,
            patch_size=config.patch_size,
            embed_dim=config.embed_dim,
            depth=config.patch_embed_depth,
            num_heads=config.patch_embed_heads,
            num_registers=config.patch_embed_registers,
            mlp_ratio=config.mlp_ratio,
            layer_scale=config.patch_embed_layer_scale,
        )
        rope = RotaryEmbedding2D(config.rope_base)

        def make_block() -> Block:
            return Block(
                config.embed_dim, config.num_heads, config.mlp_ratio, config.layer_scale, qk_norm=True, rope=rope
            )

        self.frame_blocks = nn.ModuleList(make_block() for _ in range(config.depth))
        self.global_blocks = nn.ModuleList(make_block() for _ in range(config.depth))
        # Slot 0: the reference view; slot 1: every other view.
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, config.embed_dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, config.num_register_tokens, config.embed_dim))
        self.restore_constants()
        self._init_weights()

    def restore_constants(self, device: torch.device | str | None = None) -> None:
        """(Re)create the non-persistent normalisation buffers (needed after building on the meta device)."""
        device = device if device is not None else self.camera_token.device
        for name, values in (("_resnet_mean", IMAGENET_MEAN), ("_resnet_std", IMAGENET_STD)):
            self.register_buffer(name, torch.tensor(values, device=device).view(1, 1, 3, 1, 1), persistent=False)

    def _init_weights(self) -> None:
        init_transformer_weights(self)
        nn.init.trunc_normal_(self.patch_embed.pos_embed, std=0.02)
        for token in (self.patch_embed.cls_token, self.patch_embed.register_tokens, self.camera_token, self.register_token):
            nn.init.normal_(token, std=1e-6)

    def _special_tokens(self, batch: int, views: int) -> Tensor:
        """``[B*S, 1 + registers, C]``: slot 0 for view 0, slot 1 for the others."""
        special = torch.cat((self.camera_token, self.register_token), dim=2)  # [1, 2, 1+R, C]
        per_view = torch.cat((special[:, :1], special[:, 1:].expand(1, views - 1, -1, -1)), dim=1)
        return per_view.expand(batch, -1, -1, -1).reshape(batch * views, *special.shape[2:])

    def _positions(self, batch_views: int, grid_hw: tuple[int, int], device: torch.device) -> Tensor:
        """``[B*S, P, 2]`` (row, column): special tokens at (0, 0), patch (r, c) at (r + 1, c + 1)."""
        h, w = grid_hw
        rows, columns = torch.meshgrid(
            torch.arange(1, h + 1, device=device), torch.arange(1, w + 1, device=device), indexing="ij"
        )
        patches = torch.stack((rows.flatten(), columns.flatten()), dim=-1)
        special = torch.zeros(self.patch_start_idx, 2, dtype=patches.dtype, device=device)
        return torch.cat((special, patches)).expand(batch_views, -1, -1)

    def _run_block(self, block: Block, tokens: Tensor, positions: Tensor, merge: AttentionWrapper | None = None) -> Tensor:
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, tokens, positions, merge, use_reentrant=False)
        return block(tokens, positions, merge)

    def forward(self, images: Tensor, layers: tuple[int, ...] | None = None) -> dict[int, Tensor]:
        """Returns ``{layer index: [B, S, P, 2C]}`` (frame output then global output on the channel axis).

        ``layers`` defaults to the layers the heads read (``config.head_layer_indices`` and the
        last layer, read by the camera head); only those are kept, so memory does not grow
        with the depth, and no block after the last of them runs (none for ``layers=()``).
        """
        batch, views, _, height, width = images.shape
        grid_hw = patch_grid((height, width), self.config.patch_size)
        if layers is None:
            layers = (*self.config.head_layer_indices, self.config.depth - 1)
        wanted = set(layers)
        if not wanted:
            return {}
        images = (images - self._resnet_mean) / self._resnet_std
        patches = self.patch_embed(images.reshape(batch * views, 3, height, width))
        special = self._special_tokens(batch, views)
        tokens = torch.cat((special, patches), dim=1)  # [B*S, P, C]
        tokens_per_view, channels = tokens.shape[1:]
        frame_positions = self._positions(batch * views, grid_hw, images.device)
        global_positions = frame_positions.reshape(batch, views * tokens_per_view, 2)
        merge = None
        if self.config.merge_ratio > 0:
            merge = GlobalTokenMerger(TokenLayout(views, self.patch_start_idx, grid_hw), self.config.merge_ratio)

        outputs: dict[int, Tensor] = {}
        for index, (frame_block, global_block) in enumerate(zip(self.frame_blocks, self.global_blocks)):
            tokens = self._run_block(frame_block, tokens.reshape(batch * views, tokens_per_view, channels), frame_positions)
            frame_out = tokens
            tokens = self._run_block(global_block, tokens.reshape(batch, views * tokens_per_view, channels),
                                     global_positions, merge)
            if index in wanted:
                outputs[index] = torch.cat(
                    (
                        frame_out.reshape(batch, views, tokens_per_view, channels),
                        tokens.reshape(batch, views, tokens_per_view, channels),
                    ),
                    dim=-1,
                )
            if index >= max(wanted):
                break
        return outputs
