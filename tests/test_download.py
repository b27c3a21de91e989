"""The downloader against a real HTTP server on loopback: complete, cut-off, stalled, wrong hash."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from conftest import make_arrays

from corl.data.dataset import TransitionDataset
from corl.data.download import clean_stale_parts, download_file, dsrl_url, read_sidecar, verify_file
from corl.data.formats.dsrl import read_dsrl, write_dsrl
from corl.errors import DatasetError

FILE = "SafetyCarCircle-v0-100-1450.hdf5"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload`` at ``/<FILE>``; ``server.mode`` picks a misbehaviour."""

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        server = self.server
        server.requests += 1  # type: ignore[attr-defined]
        body: bytes = server.payload  # type: ignore[attr-defined]
        mode: str = server.mode  # type: ignore[attr-defined]
        if self.path != f"/{FILE}":
            self.send_error(404)
            return
        if mode == "stall":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:100])
            self.wfile.flush()
            server.release.wait(5.0)  # type: ignore[attr-defined]
            return
        self.send_response(200)
        if mode == "short":
            # Promise more than is sent, then hang up: a connection lost mid-body.
            self.send_header("Content-Length", str(len(body) + 4096))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def dsrl_file(tmp_path: Path) -> Path:
    """A real (tiny) DSRL-format file, written by corl's writer."""
    return write_dsrl(TransitionDataset.from_numpy(make_arrays(n_episodes=2, length=20)), tmp_path / "src" / FILE)


@pytest.fixture
def server(dsrl_file: Path) -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.payload = dsrl_file.read_bytes()  # type: ignore[attr-defined]
    srv.mode = "ok"  # type: ignore[attr-defined]
    srv.requests = 0  # type: ignore[attr-defined]
    srv.release = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()  # type: ignore[attr-defined]
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def _url(srv: http.server.ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/{FILE}"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_success_writes_file_and_sidecar(server, dsrl_file, tmp_path):
    dest = tmp_path / "cache" / FILE
    seen: list[tuple[int, int | None]] = []
    result = download_file(_url(server), dest, timeout=5, progress=lambda done, total: seen.append((done, total)))
    payload = dsrl_file.read_bytes()
    assert result.path == dest and result.bytes == len(payload)
    assert result.sha256 == hashlib.sha256(payload).hexdigest()
    assert dest.read_bytes() == payload
    assert read_sidecar(dest) == result.sha256
    assert verify_file(dest) is True
    assert seen and seen[-1] == (len(payload), len(payload))
    assert _leftovers(dest.parent) == sorted([FILE, FILE + ".sha256"])
    assert len(read_dsrl(dest)) == 40  # the file is a loadable DSRL dataset


def test_expected_sha256_accepted(server, dsrl_file, tmp_path):
    good = hashlib.sha256(dsrl_file.read_bytes()).hexdigest()
    assert download_file(_url(server), tmp_path / FILE, timeout=5, expected_sha256=good.upper()).sha256 == good


def test_connection_closed_mid_body_leaves_nothing(server, tmp_path):
    server.mode = "short"
    dest = tmp_path / "cache" / FILE
    with pytest.raises(DatasetError) as err:
        download_file(_url(server), dest, timeout=5)
    assert "\n" not in str(err.value) and "not written" in str(err.value)
    assert not dest.exists()
    assert _leftovers(dest.parent) == []  # no temp file, no sidecar


def test_short_read_does_not_replace_existing_file(server, tmp_path):
    dest = tmp_path / "dl" / FILE
    dest.parent.mkdir()
    dest.write_bytes(b"previous")
    server.mode = "short"
    with pytest.raises(DatasetError):
        download_file(_url(server), dest, timeout=5)
    assert dest.read_bytes() == b"previous"
    assert _leftovers(dest.parent) == [FILE]


def test_sha_mismatch_is_an_error(server, tmp_path):
    dest = tmp_path / "dl" / FILE
    with pytest.raises(DatasetError, match="sha256"):
        download_file(_url(server), dest, timeout=5, expected_sha256="0" * 64)
    assert _leftovers(dest.parent) == []


def test_stalled_server_times_out_quickly(server, tmp_path):
    server.mode = "stall"
    dest = tmp_path / "dl" / FILE
    start = time.monotonic()
    with pytest.raises(DatasetError, match="timed out"):
        download_file(_url(server), dest, timeout=0.5)
    assert time.monotonic() - start < 3.0
    assert _leftovers(dest.parent) == []


def test_http_404_and_refused_connection(server, tmp_path):
    dest = tmp_path / "dl" / FILE
    with pytest.raises(DatasetError, match="HTTP 404"):
        download_file(_url(server).replace(FILE, "missing.hdf5"), dest, timeout=5)
    port = server.server_address[1]
    server.shutdown()
    server.server_close()  # nothing listens on the port any more
    with pytest.raises(DatasetError, match="cannot connect"):
        download_file(f"http://127.0.0.1:{port}/{FILE}", dest, timeout=2)
    assert _leftovers(dest.parent) == []


def test_verify_file_detects_corruption(server, tmp_path):
    dest = download_file(_url(server), tmp_path / FILE, timeout=5).path
    with open(dest, "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00corrupt\x00")
    assert verify_file(dest) is False
    (tmp_path / "plain.hdf5").write_bytes(b"x")
    assert verify_file(tmp_path / "plain.hdf5") is None  # no sidecar: nothing to compare


def test_stale_temp_of_a_dead_process_is_cleaned(server, tmp_path):
    stale = tmp_path / f".{FILE}.999999999.part"  # no such pid
    stale.write_bytes(b"half")
    download_file(_url(server), tmp_path / FILE, timeout=5)
    assert not stale.exists()
    assert clean_stale_parts(tmp_path / FILE) == []


def test_dsrl_url_and_mirror(monkeypatch):
    monkeypatch.delenv("CORL_DSRL_MIRROR", raising=False)
    assert dsrl_url(FILE) == f"https://huggingface.co/datasets/YYY-45/DSRL/resolve/main/{FILE}"
    monkeypatch.setenv("CORL_DSRL_MIRROR", "http://127.0.0.1:1/m/")
    assert dsrl_url(FILE) == f"http://127.0.0.1:1/m/{FILE}"
