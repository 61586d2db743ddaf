"""The app's model choice says what it loaded: differences of an official-style file, and why a model was not used."""
from __future__ import annotations

import torch

from demo.services import ModelService
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
