"""The real web app in a subprocess, driven through its public API with `gradio_client`.

One app server for the module (tiny random model, 112 px input, at most 6 views); the
questions go to the local seeing VLM server (`grounding/vlm/seeing_server.py`).
"""
from __future__ import annotations

import re
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imageio.v3
import pytest
import trimesh
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from helpers import write_synthetic_photos
from demo.handlers import without_paths
from iggt.scene import Scene
from tools.app_server import running_app

MAX_VIEWS = 6
API_KEY = "sk-test-7f3Kq9ZxSECRETwv2"
COMPATIBLE = "OpenAI-compatible server"


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_checkpoint):
    with running_app(tmp_path_factory.mktemp("app"), tiny_checkpoint, "--max-views", str(MAX_VIEWS)) as running:
        yield running


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    return write_synthetic_photos(tmp_path_factory.mktemp("photos"), seed=3, views=3)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """An 8-frame MP4 of a generated scene."""
    from iggt.data.synthetic import GeneratorConfig, generate_scene

    path = tmp_path_factory.mktemp("video") / "walkthrough.mp4"
    record = generate_scene(4, GeneratorConfig(num_views=8, image_size=(112, 112), object_count=(3, 5)))
    imageio.v3.imwrite(path, record.images, fps=4, codec="libx264")
    return path


def reconstruct(client: Client, files=None, example: str = "", video: Path | None = None, video_frames: int = 4,
                clustering: str = "large"):
    """Call the /reconstruct endpoint; the display options keep their defaults."""
    uploads = [handle_file(str(p)) for p in files] if files else None
    return client.predict(files=uploads, video=handle_file(str(video)) if video else None, video_frames=video_frames,
                          example=example, clustering=clustering, api_name="/reconstruct")


def ask(client: Client, question: str, base_url: str, api_key: str = "", mode: str = "agent"):
    return client.predict(question=question, backend_choice=COMPATIBLE, base_url=base_url, model_name="",
                          api_key=api_key, mode=mode, api_name="/ask")


def test_bundled_example_gives_scene_pictures_and_loadable_downloads(app):
    client = Client(app.url, verbose=False)
    status, viewer, overlays, depths, table, downloads, *_ = reconstruct(client, example="synthetic-5")

    assert status.startswith("Done: **6 views**") and "instances**" in status
    for stage in ("loading", "model", "clustering", "display", "downloads"):
        assert re.search(rf"{stage} \d+\.\d s", status), status
    assert "Model: IGGT tiny" in status  # the page says which model is loaded
    assert len(overlays) == len(depths) == 6 and "<table" in table

    assert viewer["count"] > 0 and viewer["positions"]  # the 3D view's points (demo.viewer3d)
    by_name = {Path(p).name: Path(p) for p in downloads}
    assert {"scene.glb", "instances.glb", "features.glb", "points.ply", "summary.json", "scene.npz",
            "masks.zip", "colmap.zip"} <= set(by_name)
    scene = Scene.load(by_name["scene.npz"])
    assert scene.num_views == 6 and scene.instances is not None and scene.instances.count > 0
    assert len(trimesh.load(by_name["instances.glb"]).geometry) > 0
    assert {"cameras.txt", "images.txt", "points3D.txt"} <= set(zipfile.ZipFile(by_name["colmap.zip"]).namelist())
    assert len(zipfile.ZipFile(by_name["masks.zip"]).namelist()) == 2 * 6


def test_the_app_warms_up_before_it_opens(app):
    """The first person's run should not pay the process's one-time costs (docs/app.md, "Speed"): the app
    runs a bundled example through the model and the clustering while its loading page is up."""
    assert re.search(r"warmed up on 6 photos in \d+\.\d s", app.log_text()), app.log_text()[-2000:]


def test_upload_then_question_and_the_api_key_stays_secret(app, photos, vlm_server):
    client = Client(app.url, verbose=False)
    reconstructed = reconstruct(client, files=photos)
    assert reconstructed[0].startswith("Done: **3 views**")
    with pytest.raises(AppError, match="Enter your OpenAI API key"):
        client.predict(question="Where is the red cube?", backend_choice="OpenAI (GPT-4o)", base_url="",
                       model_name="", api_key="", mode="agent", api_name="/ask")
    requests_before = len(vlm_server.state.requests)

    answer, viewer, overlays, table, trace, answer_views = ask(client, "Where is the red cube?", vlm_server.url,
                                                               api_key=API_KEY)

    assert answer.startswith("**") and "Instances:" in answer
    assert "VLM calls" in trace and "*answer*" in trace
    # (the random model's instances may all be structure, which the agent names "structure")
    assert re.search(r"<td>([a-z]+ (cube|sphere|cone|object)|structure)</td>", table), \
        "the agent's instance names are not shown"
    assert len(overlays) == 3 and viewer["count"] > 0
    sent = vlm_server.state.requests[requests_before:]
    assert sent, "the question never reached the VLM server"
    assert any(API_KEY in str(request) for request in sent), "the typed key was not used for the VLM"

    responses = repr((reconstructed, answer, table, trace))
    returned_files = [Path(item["image"]) for item in [*overlays, *answer_views]]
    assert API_KEY not in responses
    assert not [p.name for p in returned_files if API_KEY.encode() in p.read_bytes()]
    assert API_KEY not in app.log_text()
    leaked = [p.name for p in app.tmp.rglob("*") if p.is_file() and API_KEY.encode() in p.read_bytes()]
    assert not leaked, f"the API key was written to {leaked}"


def test_four_clients_at_once_and_a_bad_upload_only_fails_its_own_client(app, photos, video, tmp_path):
    not_a_photo = tmp_path / "holiday.jpg"
    not_a_photo.write_text("this is a text file, not a photo")
    jobs = {"example": dict(example="synthetic-12"), "three": dict(files=photos[:3]),
            "video": dict(video=video, video_frames=2), "bad": dict(files=[photos[0], not_a_photo])}

    def run(job: dict):
        try:
            return reconstruct(Client(app.url, verbose=False), **job)[0]
        except AppError as err:
            return err

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = dict(zip(jobs, pool.map(run, jobs.values())))

    assert results["example"].startswith("Done: **6 views**")
    assert results["three"].startswith("Done: **3 views**")
    assert results["video"].startswith("Done: **2 views**")
    error = results["bad"]
    assert isinstance(error, AppError), error
    message = str(error)
    assert "holiday.jpg" in message and "Traceback" not in message and "/" not in message, message


def test_mistakes_get_readable_messages(app, photos, vlm_server):
    client = Client(app.url, verbose=False)
    with pytest.raises(AppError, match="Reconstruct a scene first"):
        ask(client, "Where is the red cube?", vlm_server.url)
    with pytest.raises(AppError, match="Upload some photos or a video, or pick an example scene"):
        reconstruct(client)
    with pytest.raises(AppError, match=f"Too many photos: {MAX_VIEWS + 1} given, at most {MAX_VIEWS} allowed"):
        reconstruct(client, files=(photos * 3)[:MAX_VIEWS + 1])
    with pytest.raises(AppError, match="Give one input only"):
        reconstruct(client, files=photos, example="synthetic-5")
    assert "Traceback" not in app.log_text(), "a user's mistake put a stack trace into the server log"


def test_messages_lose_server_directories_but_keep_urls():
    assert without_paths("cannot identify image file '/tmp/gradio/3f2a/holiday.jpg'") == \
        "cannot identify image file 'holiday.jpg'"
    assert without_paths(r"C:\Users\me\model.pt is damaged") == "model.pt is damaged"
    kept = "Enter the URL of the server (e.g. http://localhost:8000/v1); 3/4 done"
    assert without_paths(kept) == kept
