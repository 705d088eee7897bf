"""Atomic writes and image reading with clear errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ndmha.errors import DataError
from ndmha.io import (
    WINDOW_PER_THREAD,
    atomic_open,
    list_images,
    map_parallel,
    read_image,
    staged_dir,
    take_first,
    write_image,
)


def test_atomic_open_keeps_old_file_when_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write("half of the new")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind


def test_atomic_open_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with atomic_open(target) as fh:
        fh.write("new")
    assert target.read_text() == "new"


def test_write_image_roundtrip_and_no_leftovers(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    write_image(tmp_path / "a.png", image)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), image)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
    # readable as a plain open() would have made it (temporary files are created 0600)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    import subprocess

    return int(subprocess.run(["sh", "-c", "umask"], capture_output=True, text=True).stdout, 8)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"this is not an image at all", "cannot decode"),
])
def test_read_image_rejects_bad_files(tmp_path: Path, content: bytes, reason: str) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=reason) as err:
        read_image(bad)
    assert str(bad) in str(err.value)


def test_read_image_rejects_truncated_png(tmp_path: Path) -> None:
    ok, encoded = cv2.imencode(".png", np.full((64, 64, 3), 100, np.uint8))
    assert ok
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(encoded.tobytes()[: len(encoded) // 2])
    with pytest.raises(DataError, match="truncated.png"):
        read_image(truncated)


def test_list_images_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        list_images(tmp_path / "nowhere")


def test_take_first_counts(tmp_path: Path) -> None:
    files = [tmp_path / f"{i}.png" for i in range(3)]
    assert take_first(files, 2, tmp_path, "images") == files[:2]
    with pytest.raises(DataError, match="found 3 images, but 5 are configured"):
        take_first(files, 5, tmp_path, "images")


def test_staged_dir_resumes_same_fingerprint_and_restarts_another(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_dir(out, {"size": 1}) as stage:
            (stage / "done.txt").write_text("kept")
            raise RuntimeError("interrupted")
    assert not out.exists()
    with staged_dir(out, {"size": 1}) as stage:
        assert (stage / "done.txt").read_text() == "kept"
    assert (out / "done.txt").exists() and not (out / ".fingerprint.json").exists()
    assert not out.with_name("out.partial").exists()

    with pytest.raises(RuntimeError):
        with staged_dir(tmp_path / "other", {"size": 1}) as stage:
            (stage / "old.txt").write_text("stale")
            raise RuntimeError("interrupted")
    with staged_dir(tmp_path / "other", {"size": 2}) as stage:
        assert not (stage / "old.txt").exists()


def test_map_parallel_keeps_order_and_takes_up_a_bounded_window_of_items() -> None:
    """While the first item is unfinished, at most WINDOW_PER_THREAD x threads items are taken up,
    however many there are (all were submitted at once before: a future held for each of 30,000
    images). Item 0 waits until more than a window has started (what the unbounded pool did at
    once) or 2 s have passed; either way the count it saw must not exceed the window."""
    threads, n = 2, 1000
    window = WINDOW_PER_THREAD * threads
    lock = threading.Lock()
    started: list[int] = []
    seen_by_first: list[int] = []

    def square(i: int) -> int:
        with lock:
            started.append(i)
        if i == 0:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and len(started) <= window:
                time.sleep(0.01)
            seen_by_first.append(len(started))
        return i * i

    assert map_parallel(square, list(range(n)), threads, "test") == [i * i for i in range(n)]
    assert seen_by_first[0] <= window
    assert sorted(started) == list(range(n))
