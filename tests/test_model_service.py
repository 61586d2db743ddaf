"""The app's model choice says what it loaded (differences of an official-style file, why a model was not
used), and the app warms the model up before it opens."""
from __future__ import annotations

import logging

import torch

from demo import handlers
from demo.handlers import WARM_UP_EXAMPLE, warm_up
from demo.services import ModelService
from demo.ui import bundled_examples
from iggt.config import IGGTConfig
from iggt.model.iggt import IGGT


def official_style_file(folder, drop: tuple[str, ...]) -> str:
    """A tiny model saved as the release saves (one .pth), without the entries named in ``drop``."""
    torch.manual_seed(0)
    model = IGGT(IGGTConfig.from_preset("tiny"))
    folder.mkdir()
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith(drop)}, folder / "IGGT.pth")
    (folder / "config.json").write_text(model.config.to_json())
    return str(folder / "IGGT.pth")


def test_the_banner_lists_what_an_accepted_checkpoint_lacked(tmp_path):
    spec = official_style_file(tmp_path / "official", drop=("part_head.projects.", "aggregator.patch_embed.mask_token"))
    service = ModelService(spec)
    service.load()
    banner = service.info.banner()
    assert "harmless differences" in banner and "aggregator.patch_embed.mask_token (not read by the forward pass)" in banner
    assert str(tmp_path) not in banner


def test_a_model_that_lacks_used_weights_is_not_switched_quietly(tmp_path, monkeypatch):
    broken = official_style_file(tmp_path / "broken", drop=("part_head.cross_attention_2.",))
    service = ModelService()
    shipped = service._candidates()[-1]
    monkeypatch.setattr(service, "_candidates", lambda: [broken, shipped])
    service.load()
    banner = service.info.banner()
    assert banner.startswith("**Model:** IGGT-small")
    assert "not used: 8 entries do not fit: missing: part_head.cross_attention_2." in banner
    assert str(tmp_path) not in banner


# -- the warm-up before the app opens (`demo.handlers.warm_up`) ----------------------------------

def test_the_warm_up_runs_a_bundled_example_and_a_failure_does_not_stop_the_start(tiny_checkpoint, tmp_path,
                                                                                   caplog):
    models = ModelService(str(tiny_checkpoint))
    broken = tmp_path / "photo.jpg"
    broken.write_bytes(b"not a photo")
    with caplog.at_level(logging.INFO, logger="demo.handlers"):
        warm_up(models, {WARM_UP_EXAMPLE: [broken]})  # returns: the app starts without it
        assert "the warm-up run failed" in caplog.text
        warm_up(models, bundled_examples())
    assert "warmed up on 6 photos" in caplog.text


def test_a_large_model_on_the_cpu_is_not_warmed_up(tiny_checkpoint, monkeypatch, caplog):
    """A run of the 1B model on a CPU takes minutes: the start would wait for them."""
    monkeypatch.setattr(handlers, "WARM_UP_MAX_CPU_MILLIONS", 0)  # the tiny model counts as large
    with caplog.at_level(logging.INFO, logger="demo.handlers"):
        warm_up(ModelService(str(tiny_checkpoint)), bundled_examples())
    assert "warm" not in caplog.text
