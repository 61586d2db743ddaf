"""``python -m iggt train`` and ``python -m iggt generate``.

    python -m iggt generate --out data/train --count 2000 --seed 0
    python -m iggt train --config configs/small-cpu.yaml run.output_dir=runs/small optim.steps=100
    python -m iggt train --config configs/small-cpu.yaml --resume        # continue after a stop
    accelerate launch -m iggt train --config configs/paper-1b.yaml       # several GPUs / nodes
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m iggt train ...  # several CPU processes
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``generate`` commands."""
    train = subparsers.add_parser(
        "train", help="train IGGT from a YAML recipe",
        description="Train IGGT from a YAML recipe (see configs/). Overrides such as optim.steps=100 "
                    "change single keys of the recipe.")
    train.add_argument("--config", required=True, type=Path, help="YAML training recipe")
    train.add_argument("--resume", action="store_true",
                       help="continue from the latest checkpoint in run.output_dir")
    train.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE",
                       help="override keys of the recipe, e.g. run.output_dir=runs/test optim.lr_heads=1e-4")
    train.set_defaults(func=run_train)

    generate = subparsers.add_parser(
        "generate", help="generate synthetic training scenes with ground truth",
        description="Render synthetic scenes (cameras, depth, instance ids) as scene records.")
    generate.add_argument("--out", required=True, type=Path, help="folder to write the scene records into")
    generate.add_argument("--count", required=True, type=int, help="number of scenes")
    generate.add_argument("--seed", type=int, default=0, help="data-set seed: scene i is rendered from a seed derived from (SEED, i), so sets with different seeds share no scene")
    generate.add_argument("--views", type=int, default=None, help="views per scene (default: the generator's)")
    generate.add_argument("--size", type=int, nargs=2, default=None, metavar=("HEIGHT", "WIDTH"),
                          help="image size in pixels (default: the generator's)")
    generate.add_argument("--kind", choices=("room", "tabletop"), default="room",
                          help="room: objects on a room's floor seen from eye height; tabletop: small objects "
                               "on a flat surface seen from above (the real photo sets' kind of scene)")
    generate.set_defaults(func=run_generate)


def run_train(args: argparse.Namespace) -> int:
    from iggt.training.trainer import TrainConfig, Trainer

    config = TrainConfig.from_yaml(args.config, args.overrides)
    trainer = Trainer(config)
    exported = trainer.train(resume=args.resume)
    if trainer.accelerator.is_main_process:
        print(f"model saved to {exported}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from iggt.data.synthetic import GeneratorConfig, generate_dataset
    from iggt.errors import IGGTError

    if args.count < 1:
        raise IGGTError(f"--count must be at least 1, got {args.count}")
    changes = {}
    if args.views is not None:
        changes["num_views"] = args.views
    if args.size is not None:
        changes["image_size"] = tuple(args.size)
    config = GeneratorConfig(kind=args.kind, **changes)
    paths = generate_dataset(args.out, args.count, args.seed, config, progress=True)
    print(f"{len(paths)} scenes written to {args.out}")
    return 0
