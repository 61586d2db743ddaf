"""Entry point: `python app.py` locally, and the app file of the Hugging Face Space.

On ZeroGPU Spaces the `spaces` package is present and the model runs inside `@spaces.GPU`;
everywhere else that decorator does not exist and nothing changes.
"""
from __future__ import annotations

import argparse
import logging
import os

from demo.handlers import Limits
from demo.ui import build_demo

try:  # ZeroGPU: reserve a GPU only while the model runs
    import spaces
except ImportError:
    spaces = None


def main() -> None:
    parser = argparse.ArgumentParser(description="IGGT web app")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--checkpoint", default=None, help="folder, file, preset or Hub id (default: see README)")
    parser.add_argument("--max-views", type=int, default=int(os.environ.get("IGGT_MAX_VIEWS", "32")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from demo.services import ModelService

    models = ModelService(args.checkpoint)
    if spaces is not None:
        models.wrap_model_call(spaces.GPU(duration=120))
    limits = Limits(max_views=args.max_views)
    demo = build_demo(models, limits)
    demo.queue(default_concurrency_limit=4, max_size=64)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=f"{limits.max_upload_mb}mb",
                show_error=False)


if __name__ == "__main__":
    main()
