"""Which checkpoint file of a Hub repository loads, and why: against a local stand-in for the Hub.

`FakeHub` speaks, on 127.0.0.1, the endpoints of the Hub API that ``huggingface_hub`` calls to
list a repository (``/api/models/<repo>/tree/<revision>``), to describe it
(``/api/models/<repo>/revision/<revision>``, for ``snapshot_download``) and to fetch a file
(``/<repo>/resolve/<revision>/<file>``, HEAD and GET with byte ranges, with the Hub's headers:
commit, ETag, size, and its error codes). The real client talks to it over HTTP; every request
is recorded, so a test can tell a header read (a range request) from a download.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import pytest
import torch
from safetensors.torch import save as safetensors_bytes

from iggt.checkpoints import RELEASE_FILENAMES, CheckpointError, checkpoint_file_in_repo, parse_hub_spec
from iggt.config import IGGTConfig
from iggt.loading import load_model
from iggt.model.iggt import IGGT

pytestmark = pytest.mark.usefixtures("single_thread")

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class FakeHub:
    """Model repositories (repo id -> {path in the repository: bytes}) served as the Hub serves them."""

    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    failing: bool = False
    """Answer every request with 500, as the Hub does when it is down."""
    url: str = ""

    def downloads(self, filename: str) -> list[Request]:
        """GET requests of a whole file (no byte range)."""
        return [r for r in self.requests if r.method == "GET" and r.path.endswith(f"/resolve/main/{filename}")
                and r.range is None]

    def ranges(self, filename: str) -> list[str]:
        return [r.range for r in self.requests if r.path.endswith(f"/resolve/main/{filename}") and r.range]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    tree = re.compile(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?")
    revision = re.compile(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)")
    resolve = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

        def do_HEAD(self):
            self.answer(send_body=False)

        def do_GET(self):
            self.answer(send_body=True)

        def answer(self, send_body: bool) -> None:
            path = unquote(urlparse(self.path).path)
            hub.requests.append(Request(self.command, path, self.headers.get("Range")))
            if hub.failing:
                self.error(500, "InternalError")
            elif match := tree.fullmatch(path):
                self.listing(match[1])
            elif match := revision.fullmatch(path):
                self.info(match[1])
            elif match := resolve.fullmatch(path):
                self.file(match[1], match[3], send_body)
            else:
                self.error(404, "EntryNotFound")

        def repo(self, repo_id: str) -> dict[str, bytes] | None:
            if repo_id not in hub.repos:
                self.error(404, "RepoNotFound")
                return None
            return hub.repos[repo_id]

        def listing(self, repo_id: str) -> None:
            if (files := self.repo(repo_id)) is not None:
                self.json([{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                           for name, data in sorted(files.items())])

        def info(self, repo_id: str) -> None:
            if (files := self.repo(repo_id)) is not None:
                self.json({"id": repo_id, "modelId": repo_id, "sha": COMMIT, "private": False,
                           "siblings": [{"rfilename": name} for name in sorted(files)]})

        def file(self, repo_id: str, name: str, send_body: bool) -> None:
            if (files := self.repo(repo_id)) is None:
                return
            if name not in files:
                self.error(404, "EntryNotFound")
                return
            data = files[name]
            status, body = 200, data
            if (wanted := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")) is not None:
                start, end = int(wanted[1]), min(int(wanted[2] or len(data) - 1), len(data) - 1)
                status, body = 206, data[start:end + 1]
            self.send_response(status)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def json(self, value) -> None:
            body = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def error(self, status: int, code: str) -> None:
            body = json.dumps({"error": code}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running `FakeHub` that the Hub client and `iggt.checkpoints` use, with an empty cache."""
    from huggingface_hub import constants

    fake = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    yield fake
    server.shutdown()
    server.server_close()


def go_offline(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


# ----------------------------------------------------------------------------- repository contents


@pytest.fixture(scope="module")
def tiny() -> IGGT:
    torch.manual_seed(0)
    return IGGT(IGGTConfig.from_preset("tiny")).eval()


def state(model: IGGT, drop: tuple[str, ...] = (), extra: int = 0) -> dict[str, torch.Tensor]:
    """The model's state dict without the ``drop`` prefixes, with ``extra`` numbers of padding (to set the size)."""
    tensors = {name: t.contiguous() for name, t in model.state_dict().items() if not name.startswith(drop)}
    if extra:
        tensors["aggregator.padding"] = torch.zeros(extra)
    return tensors


def as_safetensors(tensors: dict[str, torch.Tensor]) -> bytes:
    return safetensors_bytes(tensors)


def as_pt(tensors: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": {f"module.{k}": v for k, v in tensors.items()}}, buffer)
    return buffer.getvalue()


def config_json(model: IGGT) -> bytes:
    return model.config.to_json().encode()


VGGT_ONLY = ("part_adaptor.", "part_head.")
LARGER = 3_000_000
"""Numbers of padding that make a file larger than the whole tiny model (2.1 M parameters)."""


def same_weights(model: IGGT, reference: IGGT) -> bool:
    return all(torch.equal(tensor, reference.state_dict()[name]) for name, tensor in model.state_dict().items())


# ----------------------------------------------------------------------------- the rule


def test_the_name_the_release_reads_wins_among_several_files(hub, tiny):
    bigger = state(tiny, extra=50_000)
    hub.repos["someone/iggt"] = {"config.json": config_json(tiny), "model.safetensors": as_safetensors(state(tiny)),
                                 "iggt-finetuned.pt": as_pt(bigger), "README.md": b"# weights\n"}
    model = load_model("someone/iggt")
    choice = model.load_report.hub_file
    assert (choice.repo_id, choice.filename, choice.config_name) == ("someone/iggt", "model.safetensors", "config.json")
    assert "IGGT.from_pretrained" in choice.reason and "2 checkpoint files" in choice.reason
    assert model.load_report.source == "someone/iggt:model.safetensors"  # no cache path in reports and errors
    assert same_weights(model, tiny)
    assert not hub.downloads("iggt-finetuned.pt")
    assert RELEASE_FILENAMES[0] == "model.safetensors"


def test_otherwise_the_largest_iggt_file_checked_by_its_header_before_any_download(hub, tiny):
    vggt = as_safetensors(state(tiny, drop=VGGT_ONLY, extra=LARGER))  # the largest, but no instance branch
    iggt = as_safetensors(state(tiny))
    hub.repos["someone/iggt"] = {"config.json": config_json(tiny), "vggt-1b.safetensors": vggt,
                                 "iggt.safetensors": iggt,
                                 "iggt-half.safetensors": as_safetensors({k: v for k, v in list(state(tiny).items())[:9]})}
    model = load_model("someone/iggt")
    choice = model.load_report.hub_file
    assert choice.filename == "iggt.safetensors"
    assert "with IGGT's entries" in choice.reason and "passed over, not IGGT: vggt-1b.safetensors" in choice.reason
    assert same_weights(model, tiny)
    assert hub.ranges("vggt-1b.safetensors") and not hub.downloads("vggt-1b.safetensors")  # header only
    assert all(int(r.split("-")[1]) <= 100_000 for r in hub.ranges("vggt-1b.safetensors"))
    assert len(vggt) > len(iggt)


def test_a_pt_file_is_taken_by_its_size_and_its_entries_are_checked_as_it_loads(hub, tiny):
    hub.repos["someone/iggt"] = {"config.json": config_json(tiny), "iggt.pt": as_pt(state(tiny, extra=LARGER)),
                                 "small.safetensors": as_safetensors(state(tiny))}
    choice = checkpoint_file_in_repo("someone/iggt")
    assert choice.filename == "iggt.pt" and "checked as it loads" in choice.reason
    assert not hub.downloads("iggt.pt")
    model = load_model("someone/iggt")
    assert model.load_report.unexpected == ["aggregator.padding"] and same_weights(model, tiny)

    hub.repos["someone/vggt"] = {"config.json": config_json(tiny),
                                 "vggt.pt": as_pt(state(tiny, drop=VGGT_ONLY, extra=LARGER)),
                                 "small.safetensors": as_safetensors(state(tiny))}
    with pytest.raises(CheckpointError, match=r"someone/vggt:vggt\.pt \(the largest .* has no instance branch"):
        load_model("someone/vggt")  # chosen by size, refused by its entries: no random instance head
    assert load_model("someone/vggt:vggt.pt").load_report.missing  # named, it loads as VGGT does


def test_the_only_checkpoint_file_is_used_and_a_named_file_as_named(hub, tiny):
    hub.repos["someone/one"] = {"weights/IGGT.pth": as_pt(state(tiny)), "weights/config.json": config_json(tiny)}
    choice = checkpoint_file_in_repo("someone/one")
    assert (choice.filename, choice.config_name) == ("weights/IGGT.pth", "weights/config.json")
    assert "only checkpoint file" in choice.reason

    hub.repos["someone/iggt"] = {"config.json": config_json(tiny), "model.safetensors": as_safetensors(state(tiny)),
                                 "sub/other.pt": as_pt(state(tiny, extra=10)), "sub/config.json": config_json(tiny)}
    model = load_model("someone/iggt:sub/other.pt")
    assert model.load_report.hub_file.filename == "sub/other.pt"
    assert model.load_report.hub_file.reason == "named after the repository id"
    assert model.load_report.hub_file.config_name == "sub/config.json"
    assert model.load_report.source == "someone/iggt:sub/other.pt" and same_weights(model, tiny)
    assert not hub.downloads("model.safetensors")


def test_bad_names_and_empty_repositories_say_what_is_there(hub, tiny):
    hub.repos["someone/iggt"] = {"config.json": config_json(tiny), "a.safetensors": as_safetensors(state(tiny))}
    hub.repos["someone/empty"] = {"README.md": b"nothing yet\n", ".gitattributes": b""}
    with pytest.raises(CheckpointError, match=r"no file 'b\.pt'; its checkpoint files: a\.safetensors"):
        load_model("someone/iggt:b.pt")
    with pytest.raises(CheckpointError, match=r"must be a checkpoint file"):
        load_model("someone/iggt:config.json")
    with pytest.raises(CheckpointError, match=r"'someone/empty' has no checkpoint file .*it holds \.gitattributes, README\.md"):
        load_model("someone/empty")
    with pytest.raises(CheckpointError, match=r"no model 'someone/nothing' on the Hugging Face Hub"):
        load_model("someone/nothing")
    hub.repos["someone/vggt"] = {"x.safetensors": as_safetensors(state(tiny, drop=VGGT_ONLY)),
                                 "y.safetensors": b"not a safetensors file"}
    with pytest.raises(CheckpointError, match=r"no IGGT checkpoint: none of x\.safetensors, y\.safetensors.*someone/vggt:<file>"):
        checkpoint_file_in_repo("someone/vggt")


def test_offline_a_preloaded_repository_loads_from_the_cache_without_the_hub(hub, tiny, monkeypatch):
    """What a Space's ``preload_from_hub`` leaves: the whole snapshot in the cache; the choice is made there."""
    from huggingface_hub import constants, snapshot_download

    vggt = as_safetensors(state(tiny, drop=VGGT_ONLY, extra=LARGER))
    hub.repos["someone/iggt"] = {"config.json": config_json(tiny), "vggt-1b.safetensors": vggt,
                                 "iggt.safetensors": as_safetensors(state(tiny))}
    snapshot_download("someone/iggt", endpoint=constants.ENDPOINT, cache_dir=constants.HF_HUB_CACHE)  # the build step
    go_offline(monkeypatch)
    hub.requests.clear()
    model = load_model("someone/iggt")
    assert model.load_report.hub_file.filename == "iggt.safetensors" and same_weights(model, tiny)
    assert "passed over, not IGGT: vggt-1b.safetensors" in model.load_report.hub_file.reason
    assert hub.requests == []
    with pytest.raises(CheckpointError, match=r"offline mode \(HF_HUB_OFFLINE\) and the repository is not cached.*hf download"):
        load_model("someone/other")


@pytest.mark.slow  # about a minute: the client retries a failing Hub with back-off before the cache is used
def test_when_the_hub_fails_a_preloaded_repository_still_loads(hub, tiny):
    from huggingface_hub import constants, snapshot_download

    hub.repos["someone/iggt"] = {"config.json": config_json(tiny), "iggt.safetensors": as_safetensors(state(tiny)),
                                 "notes.txt": b"x"}
    snapshot_download("someone/iggt", endpoint=constants.ENDPOINT, cache_dir=constants.HF_HUB_CACHE)
    hub.failing = True
    model = load_model("someone/iggt")
    assert model.load_report.hub_file.filename == "iggt.safetensors" and same_weights(model, tiny)
    assert any(r.path.startswith("/api/models/someone/iggt/tree") for r in hub.requests)  # the Hub was asked first
    with pytest.raises(CheckpointError, match=r"the Hub failed \(\w+\) and the repository is not cached"):
        load_model("someone/other")


def test_hub_ids_and_paths_are_told_apart():
    assert str(parse_hub_spec("lifuguan/IGGT_official")) == "lifuguan/IGGT_official"
    spec = parse_hub_spec("lifuguan/IGGT_official:ckpt/iggt.pth")
    assert (spec.repo_id, spec.filename) == ("lifuguan/IGGT_official", "ckpt/iggt.pth")
    for not_hub in ("runs/model.pt", "./runs/x", "/abs/path", "one-word", "a/b/c"):
        assert parse_hub_spec(not_hub) is None, not_hub


def test_on_a_space_the_official_repository_loads_and_the_banner_names_the_file(hub, tiny, monkeypatch):
    """The app's default on a Space: the official repository, whatever its layout, and the banner says which file."""
    from demo.services import OFFICIAL_REPO, ModelService

    hub.repos[OFFICIAL_REPO] = {"config.json": config_json(tiny), "README.md": b"# IGGT\n",
                                "IGGT.pth": as_pt(state(tiny, extra=LARGER)),
                                "vggt.safetensors": as_safetensors(state(tiny, drop=VGGT_ONLY))}
    monkeypatch.setenv("SPACE_ID", "someone/iggt")
    monkeypatch.delenv("IGGT_CHECKPOINT", raising=False)
    service = ModelService()
    service.load()
    banner = service.info.banner()
    assert banner.startswith("**Model:** IGGT-1B, official weights"), banner
    assert "(file IGGT.pth: the largest of 2 checkpoint files" in banner
    assert "/" not in banner.split("Hub", 1)[1], "no file system path in the page"


# ----------------------------------------------------------------------------- while the Space loads


def test_while_the_model_loads_the_port_says_what_is_loading_and_is_not_ready():
    import httpx

    from demo.loading_page import loading_note, loading_page
    from demo.services import OFFICIAL_REPO, SHIPPED_MODEL
    from tools.app_server import free_port

    note = loading_note([OFFICIAL_REPO, str(SHIPPED_MODEL)])
    assert note.startswith("Loading the paper's IGGT-1B weights (lifuguan/IGGT_official, about 5 GB")
    assert note.endswith("If it cannot be used: the shipped IGGT-small model (24 MB, seconds).")
    assert loading_note(["/home/someone/models/best.pt"]) == "Loading the model best.pt."  # no paths shown

    port = free_port()
    with loading_page("127.0.0.1", port, note):
        for path in ("/", "/config", "/gradio_api/info"):
            answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
            assert "IGGT-1B weights (lifuguan/IGGT_official" in answer.text and 'http-equiv="refresh"' in answer.text
        with loading_page("127.0.0.1", port, "a second one"):  # the port is taken: nothing, and no error
            pass
    with pytest.raises(httpx.ConnectError):  # the port is free again for the app
        httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
