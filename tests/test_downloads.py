"""Weights on demand, without the network: a checkpoint served from 127.0.0.1, whole, cut short, or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from saliency_core.errors import ModelUnavailableError
from saliency_core.models import weights_download as downloads
from saliency_core.models.loading import checkpoint_path, list_models, load_model

NAME = "squeezenet1_1-b8a52dc0.pth"


def random_checkpoint() -> bytes:
    """squeezenet1_1's state dict with random weights (seed 0), as torch.save writes it; not torchvision's file,
    so its sha256 does not start with the b8a52dc0 of its name."""
    import torchvision

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def checkpoint() -> bytes:
    return random_checkpoint()


class _Handler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    cut_at: ClassVar[int | None] = None  # send the full Content-Length, then close after this many bytes
    delay_s: ClassVar[float] = 0.0  # wait this long before answering
    requests: ClassVar[list[str]] = []
    url: ClassVar[str] = ""  # the base URL files are served under

    def do_GET(self) -> None:
        self.requests.append(self.path)
        time.sleep(self.delay_s)
        data = self.files.get(self.path.rsplit("/", 1)[-1])
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data if self.cut_at is None else data[:self.cut_at])
        self.wfile.flush()
        if self.cut_at is not None:
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve_weights(**settings) -> Iterator[type[_Handler]]:
    """An HTTP server on 127.0.0.1 serving ``files`` by name under its ``url``; it records the ``requests``.

    ``settings``: class attributes of the handler (files, cut_at, delay_s).
    """
    handler = type("Handler", (_Handler,), {"files": {}, "cut_at": None, "delay_s": 0.0, "requests": [], **settings})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.url = f"http://127.0.0.1:{httpd.server_address[1]}/models/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def server(monkeypatch, tmp_path) -> Iterator[type[_Handler]]:
    """:func:`serve_weights` as SALIENCY_WEIGHTS_URL, downloads on, TORCH_HOME in a temporary folder."""
    with serve_weights() as handler:
        monkeypatch.setenv("SALIENCY_WEIGHTS_URL", handler.url)
        monkeypatch.setenv("SALIENCY_ALLOW_DOWNLOAD", "1")
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        yield handler


def folder_files(path: str) -> list[str]:
    folder = os.path.dirname(path)
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_choosing_an_uncached_model_downloads_it_once_with_progress(server, checkpoint, monkeypatch):
    monkeypatch.setattr(downloads, "sha256_prefix", lambda name: None)  # random weights: not torchvision's hash
    server.files[NAME] = checkpoint
    status = {s.name: s for s in list_models()}["squeezenet1_1"]
    assert not status.available and status.downloadable and "choosing it downloads" in status.reason
    seen: list[tuple[int, int]] = []
    model = load_model("squeezenet1_1", "cpu", progress=lambda done, total: seen.append((done, total)))
    path = checkpoint_path("squeezenet1_1")
    assert Path(path).read_bytes() == checkpoint and path.startswith(str(torch.hub.get_dir()))
    assert folder_files(path) == [NAME]
    assert seen[0] == (0, len(checkpoint)) and seen[-1] == (len(checkpoint), len(checkpoint))
    reference = torch.load(io.BytesIO(checkpoint), weights_only=True)
    assert all(torch.equal(v, reference[k]) for k, v in model.model.state_dict().items())
    assert {s.name: s for s in list_models()}["squeezenet1_1"].available
    load_model("squeezenet1_1", "cpu")
    assert server.requests == [f"/models/{NAME}"]  # once


def test_a_file_with_the_wrong_sha256_prefix_is_refused(server, checkpoint):
    server.files[NAME] = checkpoint  # its sha256 does not start with b8a52dc0
    assert not hashlib.sha256(checkpoint).hexdigest().startswith("b8a52dc0")
    with pytest.raises(ModelUnavailableError, match="sha256 starts with") as info:
        load_model("squeezenet1_1", "cpu")
    assert "place squeezenet1_1-b8a52dc0.pth" in str(info.value)
    assert folder_files(checkpoint_path("squeezenet1_1")) == []


def test_a_file_named_with_its_own_sha256_prefix_passes(server, checkpoint, tmp_path):
    name = f"net-{hashlib.sha256(checkpoint).hexdigest()[:8]}.pth"
    server.files[name] = checkpoint
    base = os.environ["SALIENCY_WEIGHTS_URL"]
    dest = tmp_path / "cache" / name
    assert downloads.download(base + name, str(dest)) == str(dest)
    assert dest.read_bytes() == checkpoint


def test_a_connection_dropped_halfway_leaves_no_half_file(server, checkpoint, monkeypatch):
    monkeypatch.setattr(downloads, "sha256_prefix", lambda name: None)
    server.files[NAME] = checkpoint
    server.cut_at = len(checkpoint) // 2
    with pytest.raises(ModelUnavailableError) as info:
        load_model("squeezenet1_1", "cpu")
    message = str(info.value)
    assert message.startswith(f"SqueezeNet 1.1 (the cs231n model): downloading {NAME} from http://127.0.0.1"), message
    assert f"after {len(checkpoint) // 2} of {len(checkpoint)} bytes" in message and f"place {NAME}" in message, message
    assert folder_files(checkpoint_path("squeezenet1_1")) == []
    assert not {s.name: s for s in list_models()}["squeezenet1_1"].available


def test_a_missing_file_on_the_server_says_http_404(server):
    with pytest.raises(ModelUnavailableError, match="HTTP 404"):
        load_model("resnet18", "cpu")
    assert folder_files(checkpoint_path("resnet18")) == []


def test_downloads_off_make_no_request_and_say_where_to_copy_the_file(server, checkpoint, monkeypatch):
    monkeypatch.setenv("SALIENCY_ALLOW_DOWNLOAD", "0")
    server.files[NAME] = checkpoint
    status = {s.name: s for s in list_models()}["squeezenet1_1"]
    assert not status.available and not status.downloadable
    path = checkpoint_path("squeezenet1_1")
    assert f"place {NAME}" in status.reason and path in status.reason
    with pytest.raises(ModelUnavailableError) as info:
        load_model("squeezenet1_1", "cpu")
    assert NAME in str(info.value) and path in str(info.value)
    assert server.requests == []


def test_an_explicit_allow_download_wins_over_the_environment(server, checkpoint, monkeypatch):
    monkeypatch.setattr(downloads, "sha256_prefix", lambda name: None)
    server.files[NAME] = checkpoint
    monkeypatch.setenv("SALIENCY_ALLOW_DOWNLOAD", "1")
    with pytest.raises(ModelUnavailableError) as info:
        load_model("squeezenet1_1", "cpu", allow_download=False)
    assert f"Place {NAME}" in str(info.value) and "downloads are off" not in str(info.value)
    assert server.requests == []
    monkeypatch.setenv("SALIENCY_ALLOW_DOWNLOAD", "0")  # the environment only sets the default
    load_model("squeezenet1_1", "cpu", allow_download=True)
    assert server.requests == [f"/models/{NAME}"]
    assert Path(checkpoint_path("squeezenet1_1")).read_bytes() == checkpoint


def test_hash_prefix_is_read_from_torchvision_style_names():
    assert downloads.sha256_prefix("efficientnet_b0_rwightman-7f5810bc.pth") == "7f5810bc"
    assert downloads.sha256_prefix("mynet.pth") is None


def test_a_read_only_checkpoint_folder_is_a_clear_message_not_a_traceback(monkeypatch, tmp_path):
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(downloads.tempfile, "mkstemp", read_only)
    with pytest.raises(ModelUnavailableError, match=r"can't write into the checkpoint folder .*copy x\.pth"):
        downloads.download("http://127.0.0.1:9/x.pth", str(tmp_path / "x.pth"))
    assert not list(tmp_path.iterdir())


def test_a_part_file_left_by_a_killed_download_is_removed_by_the_next_one(server, checkpoint, monkeypatch):
    monkeypatch.setattr(downloads, "sha256_prefix", lambda name: None)
    server.files[NAME] = checkpoint
    folder = Path(checkpoint_path("squeezenet1_1")).parent
    folder.mkdir(parents=True)
    old = time.time() - downloads.STALE_PART_S - 60
    kept = [f".{NAME}.live1234.part",  # a download still running somewhere: written just now
            ".resnet18-f37072fd.pth.x1y2z3ab.part",  # another file's
            f"{NAME}.abcd1234.part", f".{NAME}.abcd1234.part.bak", "notes.txt"]
    for name in [f".{NAME}.dead1234.part", *kept]:
        (folder / name).write_bytes(b"half a file")
        if name != kept[0]:
            os.utime(folder / name, (old, old))
    load_model("squeezenet1_1", "cpu")
    assert folder_files(str(folder / NAME)) == sorted([NAME, *kept])
