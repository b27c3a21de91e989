"""The dataset lookup order, offline mode, downloads from a loopback mirror and corrupt caches."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Iterator

import pytest
from conftest import make_arrays

import corl
from corl.data.dataset import TransitionDataset
from corl.data.formats.dsrl import write_dsrl
from corl.data.store import list_local_datasets, load_task_dataset, locate_dataset, samples_dir
from corl.errors import DatasetError
from corl.tasks import get_task

TASK = "OfflineCarCircle-v0"


def _write(path: Path, seed: int) -> Path:
    """A real DSRL-format file whose first reward identifies it."""
    return write_dsrl(TransitionDataset.from_numpy(make_arrays(n_episodes=2, length=10, seed=seed)), path)


@pytest.fixture
def task():
    return get_task(TASK)


@pytest.fixture
def places(tmp_path, monkeypatch, task) -> dict[str, Path]:
    """Where each lookup step looks, inside this test's tmp dir (samples redirected too)."""
    monkeypatch.setenv("CORL_SAMPLES_DIR", str(tmp_path / "samples"))
    monkeypatch.setenv("CORL_DOWNLOAD_TIMEOUT", "2")
    return {
        "explicit": tmp_path / "mine.hdf5",
        "store": tmp_path / "datasets" / f"{TASK}.hdf5",
        "dsrl-cache": tmp_path / "dsrl" / task.dataset_file,
        "sample": tmp_path / "samples" / f"{TASK}.hdf5",
    }


class _Mirror(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        body = self.server.files.get(self.path.lstrip("/"))  # type: ignore[attr-defined]
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def mirror(tmp_path, monkeypatch, task) -> Iterator[http.server.ThreadingHTTPServer]:
    """A loopback DSRL mirror serving a real DSRL file under DSRL's file name."""
    source = _write(tmp_path / "mirror-src.hdf5", seed=7)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    srv.daemon_threads = True
    srv.files = {task.dataset_file: source.read_bytes()}  # type: ignore[attr-defined]
    srv.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("CORL_DSRL_MIRROR", f"http://127.0.0.1:{srv.server_address[1]}")
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_lookup_order(places, task):
    for seed, name in enumerate(("explicit", "store", "dsrl-cache", "sample")):
        _write(places[name], seed)
    expected = {
        name: float(make_arrays(n_episodes=2, length=10, seed=seed)["rewards"][0])
        for seed, name in enumerate(("explicit", "store", "dsrl-cache", "sample"))
    }

    data = load_task_dataset(task, path=places["explicit"])
    assert data.metadata["origin"] == "explicit" and float(data.rewards[0]) == pytest.approx(expected["explicit"])
    for name in ("store", "dsrl-cache", "sample"):
        data = load_task_dataset(task)
        assert data.metadata["origin"] == name
        assert data.metadata["path"] == str(places[name])
        assert float(data.rewards[0]) == pytest.approx(expected[name])
        assert len(data.metadata["sha256"]) == 64
        places[name].unlink()  # the next step of the lookup shows through
    with pytest.raises(DatasetError):
        locate_dataset(task)


def test_sample_note_and_default_location(places, task, monkeypatch):
    _write(places["sample"], 0)
    source = locate_dataset(task)
    assert source.origin == "sample" and "not DSRL's" in source.note
    monkeypatch.delenv("CORL_SAMPLES_DIR")
    assert samples_dir() == Path(corl.__file__).resolve().parent.parent / "datasets" / "samples"


def test_explicit_missing_is_an_error_not_a_fallback(places, task):
    _write(places["store"], 0)
    with pytest.raises(DatasetError, match="no such file"):
        locate_dataset(task, path=places["explicit"])


def test_offline_skips_download(places, task, mirror):
    with pytest.raises(DatasetError, match="skipped: offline"):
        locate_dataset(task)  # CORL_OFFLINE=1 from conftest
    with pytest.raises(DatasetError, match="skipped: offline"):
        locate_dataset(task, offline=True)
    assert mirror.requests == []


def test_download_from_mirror_when_online(places, task, mirror, monkeypatch):
    monkeypatch.delenv("CORL_OFFLINE")
    _write(places["sample"], 0)  # the download must win over the sample
    data = load_task_dataset(task)
    assert data.metadata["origin"] == "download"
    assert Path(data.metadata["path"]) == places["dsrl-cache"]
    assert places["dsrl-cache"].with_name(task.dataset_file + ".sha256").is_file()
    assert mirror.requests == [f"/{task.dataset_file}"]
    again = locate_dataset(task)  # now verified from the cache, no second request
    assert again.origin == "dsrl-cache" and again.sha256 == data.metadata["sha256"]
    assert len(mirror.requests) == 1


def test_corrupt_cached_download_is_not_trusted(places, task, mirror, monkeypatch):
    monkeypatch.delenv("CORL_OFFLINE")
    path = locate_dataset(task).path
    with open(path, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\xffbroken\xff")
    # offline with nothing else: a one-line error that names the corrupt file
    with pytest.raises(DatasetError, match="corrupt") as err:
        locate_dataset(task, offline=True)
    assert "\n" not in str(err.value)
    # offline with a sample: the sample is used and the note says why
    _write(places["sample"], 0)
    source = locate_dataset(task, offline=True)
    assert source.origin == "sample" and "corrupt" in source.note
    # online: downloaded again over the corrupt file
    source = locate_dataset(task)
    assert source.origin == "download" and len(mirror.requests) == 2


def test_failed_download_falls_back_to_sample(places, task, mirror, monkeypatch):
    monkeypatch.delenv("CORL_OFFLINE")
    mirror.files.clear()  # the mirror answers 404
    _write(places["sample"], 0)
    source = locate_dataset(task)
    assert source.origin == "sample" and "HTTP 404" in source.note
    assert not places["dsrl-cache"].exists()


def test_non_hdf5_download_is_discarded(places, task, mirror, monkeypatch):
    monkeypatch.delenv("CORL_OFFLINE")
    mirror.files[task.dataset_file] = b"<html>please log in</html>"
    with pytest.raises(DatasetError, match="not an HDF5 file"):
        locate_dataset(task)
    assert not places["dsrl-cache"].parent.exists() or list(places["dsrl-cache"].parent.iterdir()) == []


def test_nothing_found_is_one_line_with_the_fixes(places, task):
    with pytest.raises(DatasetError) as err:
        locate_dataset(task)
    message = str(err.value)
    assert "\n" not in message
    for part in (
        str(places["store"]),
        str(places["dsrl-cache"]),
        str(places["sample"]),
        f"corl datasets collect --task {TASK}",
        "skipped: offline",
    ):
        assert part in message


def test_d4rl_task_uses_d4rl_cache_and_never_downloads(tmp_path, monkeypatch, places):
    task = get_task("hopper-medium-v2")
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    with pytest.raises(DatasetError, match="does not fetch D4RL") as err:
        locate_dataset(task, offline=False)
    assert str(tmp_path / "d4rl" / task.dataset_file) in str(err.value)
    arrays = make_arrays(n_episodes=2, length=10, obs_dim=task.obs_dim, act_dim=task.act_dim)
    write_dsrl(TransitionDataset.from_numpy(arrays), tmp_path / "d4rl" / task.dataset_file)
    data = load_task_dataset(task)  # read with the D4RL reader
    assert data.metadata["origin"] == "d4rl-cache" and len(data) == 20


def test_list_local_datasets(places, task):
    for seed, name in enumerate(("store", "dsrl-cache", "sample")):
        _write(places[name], seed)
    rows = {row.location: row for row in list_local_datasets()}
    assert set(rows) == {"store", "dsrl-cache", "sample"}
    assert all(row.task == TASK for row in rows.values())
    assert rows["dsrl-cache"].path == str(places["dsrl-cache"]) and rows["store"].size_mb > 0
