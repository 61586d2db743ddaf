"""Entry point: `python app.py` locally, and the app file of the Hugging Face Space.

On ZeroGPU Spaces the `spaces` package is present and the model runs inside `@spaces.GPU`;
everywhere else that decorator does not exist and nothing changes.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from demo.handlers import Limits, warm_up
from demo.loading_page import loading_page
from demo.services import ModelService
from demo.ui import PAGE_CSS, TRANSLATIONS, build_demo, bundled_examples

try:  # ZeroGPU: reserve a GPU only while the model runs
    import spaces
except ImportError:
    spaces = None

QUEUE_CONCURRENCY = 4
QUEUE_MAX_SIZE = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="IGGT web app")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (0.0.0.0: every network interface)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--checkpoint", default=None,
                        help="model folder, checkpoint file, preset or Hub id (owner/name or owner/name:file) "
                             "(default: IGGT_CHECKPOINT, "
                             "else the official 1B weights on a GPU machine with internet, "
                             "else the shipped iggt/weights/iggt-small)")
    parser.add_argument("--size", type=int, default=int(os.environ.get("IGGT_IMAGE_SIZE", "0")) or None,
                        help="long side of the model input in pixels, a multiple of 14 (default: the model's own)")
    parser.add_argument("--max-views", type=int, default=int(os.environ.get("IGGT_MAX_VIEWS", "32")),
                        help="most photos (or video frames) one reconstruction may use")
    parser.add_argument("--max-upload-mb", type=int, default=int(os.environ.get("IGGT_MAX_UPLOAD_MB", "50")),
                        help="largest file one may upload, in MB")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    models = ModelService(args.checkpoint, size=args.size)
    limits = Limits(max_views=args.max_views, max_video_frames=min(32, args.max_views),
                    max_upload_mb=args.max_upload_mb)
    with loading_page(args.host, args.port, models.loading_note()):  # says what loads until the app takes the port
        try:
            models.load()
        except RuntimeError as err:
            sys.exit(f"IGGT app: {err}")
        if spaces is not None:
            models.wrap_model_call(spaces.GPU(duration=120))
        else:  # not on ZeroGPU, where the model may run only inside a request (a GPU is lent to it)
            warm_up(models, bundled_examples())
        demo = build_demo(models, limits)
    demo.queue(default_concurrency_limit=QUEUE_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    # Stop on SIGTERM as on Ctrl+C, so Gradio and the sessions remove their temporary files. pycolmap
    # (the COLMAP download) is imported first: on import its logging library installs a SIGTERM
    # handler of its own that ends the process at once, leaving the files behind.
    import pycolmap  # noqa: F401

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # run_history=False: the browser's run history would keep every input, API keys included.
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=f"{limits.max_upload_mb}mb",
                show_error=False, run_history=False, mcp_server=False, css=PAGE_CSS, i18n=TRANSLATIONS)


if __name__ == "__main__":
    main()
