"""Model files for a GPU run: the starting point of its training, and the trained model in parts.

    python benchmarks/gpu_model.py init --size 224 --out runs/gpu/init        # from the shipped model
    python benchmarks/gpu_model.py split runs/gpu/run/model --out $OUT          # parts below 15 MiB
    python benchmarks/gpu_model.py join gpu-results/ --out runs/gpu-model        # a folder load_model reads

``init``: the shipped model is trained at 112 px, and its learned position table has a cell
per patch of that size; the same weights at another size get the table resized to that grid
(exactly what the model computes on the fly at that size, so only the table's shape changes),
and the released instance head (``apply_discarded_cross_attention`` off).

``split``/``join``: a device machine returns files of at most 16 MiB, and the small model in
fp16 is about 22 MB. ``split`` writes ``model-1-of-N.safetensors`` ... (whole tensors, each
part under the limit, every part carrying the model's config in its metadata); ``join`` puts
them back into ``model.safetensors`` + ``config.json``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from iggt.checkpoints import CONFIG_NAME, WEIGHTS_NAME, read_config, read_state_dict, write_checkpoint  # noqa: E402
from iggt.config import IGGTConfig  # noqa: E402

PART_NAME = "model-{index}-of-{count}.safetensors"
PART_PATTERN = re.compile(r"model-(\d+)-of-(\d+)\.safetensors")
DEFAULT_PART_MIB = 15.0
"""Below the device machine's 16 MiB per returned file, with room for the header."""


def init_at_size(source: str, size: int, out: Path) -> Path:
    """Save ``source``'s weights as a model of input size ``size`` with the released instance head."""
    import torch

    from iggt.loading import load_model, save_model
    from iggt.model.iggt import IGGT

    model = load_model(source)
    config = model.config.replace(img_size=size, apply_discarded_cross_attention=False)
    grid = size // config.patch_size
    state = model.state_dict()
    with torch.no_grad():
        state["aggregator.patch_embed.pos_embed"] = model.aggregator.patch_embed.position_embedding(
            (grid, grid), torch.float32)
    resized = IGGT(config)
    resized.load_state_dict(state, strict=True)
    return save_model(resized, out)


def split(folder: Path, out: Path, part_mib: float = DEFAULT_PART_MIB) -> list[Path]:
    """Write the saved model of ``folder`` as parts of at most ``part_mib`` MiB of tensors each."""
    from safetensors.torch import save_file

    tensors = read_state_dict(folder / WEIGHTS_NAME)
    config_text = read_config(folder / CONFIG_NAME).to_json()
    limit = part_mib * 2**20
    groups: list[dict] = [{}]
    filled = 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        if size > limit:
            raise ValueError(f"{name} alone is {size / 2**20:.1f} MiB, over the {part_mib} MiB of one part")
        if filled + size > limit:
            groups.append({})
            filled = 0
        groups[-1][name] = tensor.contiguous()
        filled += size
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, group in enumerate(groups, start=1):
        paths.append(out / PART_NAME.format(index=index, count=len(groups)))
        save_file(group, str(paths[-1]), metadata={"format": "pt", "config": config_text})
    return paths


def join(parts_folder: Path, out: Path) -> Path:
    """``model.safetensors`` + ``config.json`` in ``out`` from the parts in ``parts_folder``."""
    from safetensors import safe_open

    parts = {int(m[1]): (int(m[2]), p) for p in parts_folder.iterdir() if (m := PART_PATTERN.fullmatch(p.name))}
    counts = {count for count, _ in parts.values()}
    if len(counts) != 1 or sorted(parts) != list(range(1, counts.pop() + 1)):
        raise FileNotFoundError(f"{parts_folder}: expected model-1-of-N ... model-N-of-N.safetensors, "
                                f"found {sorted(p.name for _, p in parts.values()) or 'none'}")
    tensors, config_text = {}, ""
    for index in sorted(parts):
        with safe_open(str(parts[index][1]), framework="pt") as part:
            config_text = part.metadata()["config"]
            tensors.update({name: part.get_tensor(name) for name in part.keys()})
    return write_checkpoint(out, IGGTConfig.from_dict(json.loads(config_text)), tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="a model at another input size, with the released instance head")
    init.add_argument("--source", default=None, help="anything load_model reads (default: the shipped model)")
    init.add_argument("--size", type=int, required=True)
    init.add_argument("--out", type=Path, required=True)
    split_ = commands.add_parser("split", help="a saved model folder -> parts under the size limit")
    split_.add_argument("folder", type=Path)
    split_.add_argument("--out", type=Path, required=True)
    split_.add_argument("--part-mib", type=float, default=DEFAULT_PART_MIB)
    join_ = commands.add_parser("join", help="parts -> a saved model folder")
    join_.add_argument("parts", type=Path)
    join_.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "init":
        from iggt.reconstruct import DEFAULT_CHECKPOINT

        print(init_at_size(args.source or str(DEFAULT_CHECKPOINT), args.size, args.out))
    elif args.command == "split":
        print(json.dumps([str(p) for p in split(args.folder, args.out, args.part_mib)]))
    else:
        print(join(args.parts, args.out))


if __name__ == "__main__":
    main()
