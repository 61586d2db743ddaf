"""Training-free token merging in global attention (after FastVGGT, arXiv 2509.02560).

Global attention costs grows with the square of the number of views, and neighbouring views
mostly repeat each other. Before each global block's attention, most patch tokens of views
1..S-1 are averaged into a similar token, the attention runs on the shorter sequence, and every
merged token then takes the attention output of the token it was merged into ("unmerging"),
so the heads still read one token per patch. The rest of the block (MLP, residuals) sees every
token. What is never merged away, as in the paper:

* the camera and register tokens of every view (the camera head reads them);
* every token of the reference view 0, which fixes the world frame;
* per other view, one randomly drawn token per ``cell x cell`` region of the patch grid
  (the merge targets of that view, spread over the image) and the ``SALIENT_FRACTION`` most
  distinctive tokens (here: farthest in cosine distance from the view's mean token).

A merged token goes to the most similar (cosine, on the block's normalised input) target among
its own view's region tokens and all patch tokens of view 0. Matching only there keeps the
matching cost linear in the number of views (a search over every view would be as quadratic
as the attention it saves). Per view the same number of tokens merges, the ``ratio`` of its
patches with the highest similarity, so the shortened sequence keeps a regular shape.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import IGGTError

SALIENT_FRACTION = 0.1
"""Share of each view's patch tokens kept for being distinctive."""
MAX_CELL = 4
"""Largest region side tried for the merge targets (1 target per 16 patches)."""
MATCH_VIEWS_PER_CHUNK = 64
"""Views whose similarity matrices are computed together (bounds the matching's memory)."""


class MergeRatioError(IGGTError, ValueError):
    """The merge ratio asks for more merging than the patch grid of the views leaves room for."""


@dataclass(frozen=True)
class TokenLayout:
    """Where the tokens of one global-attention sequence ``[B, S * T, C]`` come from."""

    views: int
    special: int
    """Camera + register tokens at the start of every view."""
    grid_hw: tuple[int, int]

    @property
    def patches(self) -> int:
        return self.grid_hw[0] * self.grid_hw[1]

    @property
    def per_view(self) -> int:
        return self.special + self.patches


def merged_per_view(ratio: float, patches: int) -> int:
    """Patch tokens of each view 1..S-1 merged away at ``ratio``."""
    return int(round(ratio * patches))


def region_cell(ratio: float, grid_hw: tuple[int, int]) -> int:
    """Smallest region side whose targets still leave enough tokens to merge ``ratio`` of a view."""
    patches = grid_hw[0] * grid_hw[1]
    wanted = merged_per_view(ratio, patches)
    for cell in range(2, MAX_CELL + 1):
        targets = math.ceil(grid_hw[0] / cell) * math.ceil(grid_hw[1] / cell)
        if patches - targets - _salient_count(patches) >= wanted:
            return cell
    raise MergeRatioError(f"merge ratio {ratio} is too high for a {grid_hw[0]}x{grid_hw[1]} patch grid: "
                     f"the region targets and salient tokens leave fewer than {wanted} tokens per view to merge")


def _salient_count(patches: int) -> int:
    return int(round(SALIENT_FRACTION * patches))


@dataclass
class MergePlan:
    """Which tokens of a sequence attend (``keep``), and where each other one was merged into."""

    keep: Tensor
    """``[B, K]`` indices of the kept tokens in the full sequence."""
    source: Tensor
    """``[B, M]`` indices of the merged tokens in the full sequence."""
    target: Tensor
    """``[B, M]`` index, in the kept sequence, of the token each merged token joins."""

    def merge(self, x: Tensor) -> Tensor:
        """``[B, N, C]`` -> ``[B, K, C]``: kept tokens, each averaged with the tokens merged into it."""
        channels = x.shape[-1]
        kept = x.gather(1, self.keep[..., None].expand(-1, -1, channels))
        merged = x.gather(1, self.source[..., None].expand(-1, -1, channels))
        return kept.scatter_reduce(1, self.target[..., None].expand(-1, -1, channels), merged,
                                   reduce="mean", include_self=True)

    def keep_positions(self, positions: Tensor) -> Tensor:
        """The RoPE positions of the kept tokens (a merged token attends at its target's position)."""
        return positions.gather(1, self.keep[..., None].expand(-1, -1, positions.shape[-1]))

    def unmerge(self, y: Tensor, length: int) -> Tensor:
        """``[B, K, C]`` -> ``[B, N, C]``: every merged token gets the output of the token it joined."""
        channels = y.shape[-1]
        out = y.new_empty(y.shape[0], length, channels)
        out.scatter_(1, self.keep[..., None].expand(-1, -1, channels), y)
        copied = y.gather(1, self.target[..., None].expand(-1, -1, channels))
        return out.scatter_(1, self.source[..., None].expand(-1, -1, channels), copied)


def plan_merge(x: Tensor, layout: TokenLayout, ratio: float, generator: torch.Generator) -> MergePlan | None:
    """A `MergePlan` for the normalised block input ``x`` ``[B, S * T, C]``; None when nothing merges."""
    batch, _, channels = x.shape
    views, special, patches = layout.views, layout.special, layout.patches
    merged = merged_per_view(ratio, patches)
    if views < 2 or merged == 0:
        return None
    tokens = F.normalize(x.detach().reshape(batch, views, layout.per_view, channels)[:, :, special:].float(), dim=-1)
    reference, others = tokens[:, 0], tokens[:, 1:]  # [B, P, C], [B, S-1, P, C]
    targets = _region_targets(batch, views - 1, layout.grid_hw, region_cell(ratio, layout.grid_hw), generator,
                              x.device)  # [B, S-1, D]
    # Roles per patch: 0 may merge, 1 salient (kept), 2 region target (kept).
    role = torch.zeros(batch, views - 1, patches, dtype=torch.long, device=x.device)
    role.scatter_(-1, targets, 2)
    distinctive = 1 - (others * F.normalize(others.mean(dim=2, keepdim=True), dim=-1)).sum(-1)
    distinctive = distinctive.masked_fill(role == 2, -math.inf)
    role.scatter_(-1, distinctive.topk(_salient_count(patches), dim=-1).indices, 1)
    mergeable = patches - targets.shape[-1] - _salient_count(patches)
    candidates = role.argsort(dim=-1, stable=True)[..., :mergeable]  # [B, S-1, n] patch indices

    similarity, choice = _best_targets(others, reference, candidates, targets)
    order = similarity.argsort(dim=-1, descending=True)
    sources = candidates.gather(-1, order[..., :merged])  # [B, S-1, M] patch indices
    choice = choice.gather(-1, order[..., :merged])
    is_merged = torch.zeros_like(role, dtype=torch.bool).scatter_(-1, sources, True)
    kept_patches = (~is_merged).nonzero()[:, -1].reshape(batch, views - 1, patches - merged)

    # Index of every kept patch within its view's stretch of the kept sequence.
    slot = torch.full_like(role, -1).scatter_(-1, kept_patches, torch.arange(
        patches - merged, device=x.device).expand_as(kept_patches))
    kept_per_view = layout.per_view - merged
    offsets = layout.per_view + kept_per_view * torch.arange(views - 1, device=x.device)[None, :, None]
    own_target = offsets + special + slot.gather(-1, targets.gather(-1, choice.clamp(max=targets.shape[-1] - 1)))
    reference_target = special + (choice - targets.shape[-1])
    target = torch.where(choice < targets.shape[-1], own_target, reference_target)

    view_start = layout.per_view * torch.arange(1, views, device=x.device)[None, :, None]
    special_tokens = view_start + torch.arange(special, device=x.device)
    keep = torch.cat((torch.arange(layout.per_view, device=x.device).expand(batch, -1),
                      torch.cat((special_tokens.expand(batch, -1, -1), view_start + special + kept_patches),
                                dim=-1).reshape(batch, -1)), dim=1)
    source = (view_start + special + sources).reshape(batch, -1)
    return MergePlan(keep=keep, source=source, target=target.reshape(batch, -1))


class GlobalTokenMerger:
    """Runs a global block's attention on merged tokens; one per forward pass (its draws are seeded)."""

    def __init__(self, layout: TokenLayout, ratio: float, seed: int = 0):
        region_cell(ratio, layout.grid_hw)  # a ratio too high for this grid fails before any block runs
        self.layout, self.ratio = layout, ratio
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, attention: Callable[[Tensor, Tensor], Tensor], x: Tensor, positions: Tensor) -> Tensor:
        plan = plan_merge(x, self.layout, self.ratio, self.generator)
        if plan is None:
            return attention(x, positions)
        return plan.unmerge(attention(plan.merge(x), plan.keep_positions(positions)), x.shape[1])


def _region_targets(batch: int, views: int, grid_hw: tuple[int, int], cell: int, generator: torch.Generator,
                    device: torch.device) -> Tensor:
    """``[B, views, D]`` patch indices: one random patch of every ``cell x cell`` region of each view."""
    h, w = grid_hw
    rows, columns = math.ceil(h / cell), math.ceil(w / cell)
    scores = torch.rand(batch, views, rows * cell, columns * cell, generator=generator).to(device)
    scores[:, :, h:], scores[:, :, :, w:] = -1, -1  # padding outside the grid is never drawn
    cells = scores.reshape(batch, views, rows, cell, columns, cell).permute(0, 1, 2, 4, 3, 5)
    pick = cells.reshape(batch, views, rows, columns, cell * cell).argmax(dim=-1)
    row = torch.arange(rows, device=device)[:, None] * cell + pick // cell
    column = torch.arange(columns, device=device)[None, :] * cell + pick % cell
    return (row * w + column).reshape(batch, views, rows * columns)


def _best_targets(others: Tensor, reference: Tensor, candidates: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """For each candidate patch: similarity to and index of its best target.

    The index counts the view's own region targets first (0..D-1), then view 0's patches (D..D+P-1).
    """
    channels = others.shape[-1]
    similarities, choices = [], []
    for start in range(0, others.shape[1], MATCH_VIEWS_PER_CHUNK):
        chunk = slice(start, start + MATCH_VIEWS_PER_CHUNK)
        views = others[:, chunk]
        sources = views.gather(2, candidates[:, chunk, :, None].expand(-1, -1, -1, channels))
        own = views.gather(2, targets[:, chunk, :, None].expand(-1, -1, -1, channels))
        pool = torch.cat((own, reference[:, None].expand(-1, views.shape[1], -1, -1)), dim=2)
        best = (sources @ pool.transpose(-1, -2)).max(dim=-1)
        similarities.append(best.values)
        choices.append(best.indices)
    return torch.cat(similarities, dim=1), torch.cat(choices, dim=1)


def set_merge_ratio(model: torch.nn.Module, ratio: float) -> None:
    """Switch token merging of a built `IGGT` on (``ratio`` > 0) or off: a runtime choice, the weights stay."""
    config = model.config.replace(merge_ratio=ratio)
    model.config = model.aggregator.config = config

