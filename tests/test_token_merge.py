"""Token merging in global attention: the plan's bookkeeping, what is never merged, and the model with it on."""
import pytest
import torch

from iggt.config import IGGTConfig
from iggt.model.iggt import IGGT
from iggt.model.token_merge import TokenLayout, merged_per_view, plan_merge, region_cell, set_merge_ratio

pytestmark = pytest.mark.usefixtures("single_thread")

LAYOUT = TokenLayout(views=5, special=5, grid_hw=(16, 16))


def plan_for(x: torch.Tensor, ratio: float = 0.5, layout: TokenLayout = LAYOUT):
    return plan_merge(x, layout, ratio, torch.Generator().manual_seed(0))


def test_every_token_is_kept_or_merged_once_and_the_sequence_shrinks():
    x = torch.randn(2, LAYOUT.views * LAYOUT.per_view, 16)
    plan = plan_for(x)
    merged = merged_per_view(0.5, LAYOUT.patches)
    assert plan.keep.shape == (2, LAYOUT.views * LAYOUT.per_view - (LAYOUT.views - 1) * merged)
    everything = torch.cat((plan.keep, plan.source), dim=1).sort(dim=1).values
    assert torch.equal(everything, torch.arange(LAYOUT.views * LAYOUT.per_view).expand(2, -1))
    assert plan.target.min() >= 0 and plan.target.max() < plan.keep.shape[1]


def test_camera_register_and_reference_view_tokens_are_never_merged():
    plan = plan_for(torch.randn(1, LAYOUT.views * LAYOUT.per_view, 16))
    kept = set(plan.keep[0].tolist())
    assert set(range(LAYOUT.per_view)) <= kept  # all of view 0
    for view in range(1, LAYOUT.views):
        assert set(range(view * LAYOUT.per_view, view * LAYOUT.per_view + LAYOUT.special)) <= kept
    # merged tokens join either their own view's kept tokens or view 0's patches
    source_view = plan.source[0] // LAYOUT.per_view
    target_token = plan.keep[0, plan.target[0]]
    target_view = target_token // LAYOUT.per_view
    assert ((target_view == source_view) | (target_view == 0)).all()
    assert (target_token % LAYOUT.per_view >= LAYOUT.special).all()  # never into a camera or register token


def test_a_view_repeating_the_reference_merges_into_it_and_unmerges_exactly():
    """Tokens equal to view 0's patches merge into them; merge then unmerge gives them back unchanged."""
    reference = torch.randn(1, LAYOUT.per_view, 16)
    x = torch.cat((reference, reference), dim=1)
    layout = TokenLayout(views=2, special=LAYOUT.special, grid_hw=LAYOUT.grid_hw)
    plan = plan_for(x, 0.5, layout)
    assert torch.equal(plan.keep[0, plan.target[0]], plan.source[0] - layout.per_view)  # the same patch of view 0
    restored = plan.unmerge(plan.merge(x), x.shape[1])
    torch.testing.assert_close(restored, x)


def test_the_draws_are_seeded_and_distinctive_tokens_are_kept():
    x = torch.randn(1, LAYOUT.views * LAYOUT.per_view, 16)
    x[0, LAYOUT.per_view + LAYOUT.special + 37] = 50  # one outlier patch of view 1
    first, second = plan_for(x), plan_for(x)
    assert torch.equal(first.keep, second.keep) and torch.equal(first.target, second.target)
    assert LAYOUT.per_view + LAYOUT.special + 37 in set(first.keep[0].tolist())


def test_too_high_a_ratio_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="too high for a 4x4 patch grid"):
        region_cell(0.9, (4, 4))
    with pytest.raises(ValueError, match="merge_ratio must lie in"):
        IGGTConfig.from_preset("tiny").replace(merge_ratio=1.0)
    assert IGGTConfig().merge_ratio == 0  # off by default: the release's outputs are unchanged


def test_model_with_merging_attends_over_fewer_tokens_and_keeps_its_outputs_close():
    torch.manual_seed(0)
    model = IGGT(IGGTConfig.from_preset("tiny")).eval()
    images = torch.rand(4, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    lengths = []
    model.aggregator.global_blocks[0].attn.register_forward_hook(lambda module, inputs, output:
                                                                 lengths.append(inputs[0].shape[1]))
    with torch.inference_mode():
        dense = model(images)
        set_merge_ratio(model, 0.5)
        merged = model(images)
        again = model(images)
        set_merge_ratio(model, 0.0)
        dense_again = model(images)
    per_view = model.aggregator.patch_start_idx + 64
    assert lengths == [4 * per_view, 4 * per_view - 3 * 32, 4 * per_view - 3 * 32, 4 * per_view]
    assert torch.equal(merged.depth, again.depth)  # deterministic
    assert torch.equal(dense.depth, dense_again.depth)
    assert merged.depth.shape == dense.depth.shape and torch.isfinite(merged.world_points).all()
    assert not torch.equal(merged.depth, dense.depth)
    torch.testing.assert_close(merged.depth, dense.depth, rtol=0.05, atol=0.05)
