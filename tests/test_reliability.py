"""Reliability: bad data, kills during training and conversion, untrusted files.

Each case is listed in docs/reliability.md with the test that proves it.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ndmha.data.prepare import convert_images, prepare_masks, read_face
from ndmha.errors import DataError
from ndmha.io import list_images, read_image, write_image
from ndmha.model_files import load_torch

ROOT = Path(__file__).resolve().parents[1]


# --- data ----------------------------------------------------------------------------------


def test_grayscale_rgba_and_16bit_pngs_are_converted_and_said(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    src = tmp_path / "src"
    src.mkdir()
    gray = np.full((16, 16), 200, np.uint8)
    cv2.imwrite(str(src / "a_gray.png"), gray)
    rgba = np.dstack([np.full((16, 16, 3), 90, np.uint8), np.zeros((16, 16), np.uint8)])
    cv2.imwrite(str(src / "b_rgba.png"), rgba)
    cv2.imwrite(str(src / "c_16bit.png"), np.full((16, 16, 3), 40000, np.uint16))
    cv2.imwrite(str(src / "d_plain.png"), np.full((16, 16, 3), 10, np.uint8))
    assert read_face(src / "a_gray.png")[1] == "grayscale expanded to RGB"
    assert read_face(src / "b_rgba.png")[1] == "alpha channel dropped"
    image, note = read_face(src / "c_16bit.png")
    assert note == "16-bit scaled to 8-bit" and image.dtype == np.uint8 and image[0, 0, 0] == 156
    assert read_face(src / "d_plain.png")[1] is None
    with caplog.at_level(logging.WARNING, logger="ndmha"):
        out = convert_images(src, tmp_path / "jpg", n_images=4, size=16, quality=100)
    assert "3 of 4 images were converted" in caplog.text and "b_rgba.png: alpha" in caplog.text
    assert np.abs(read_image(out[0]).astype(int) - 200).max() <= 2  # gray value kept in RGB
    assert np.abs(read_image(out[1]).astype(int) - 90).max() <= 2   # alpha dropped, colour kept


def test_non_binary_mask_is_thresholded_and_said(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 100   # below 127: valid
    mask[:2] = 250      # above 127: hole
    write_image(tmp_path / "src" / "m.png", mask)
    with caplog.at_level(logging.WARNING, logger="ndmha"):
        (out,) = prepare_masks(tmp_path / "src", tmp_path / "masks", n_masks=1, size=8)
    result = read_image(out, cv2.IMREAD_GRAYSCALE)
    assert set(np.unique(result)) == {0, 255} and (result[:2] == 255).all()
    assert (result[2:] == 0).all()
    assert "not binary (40 grey pixels), thresholded at 127" in caplog.text


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "src" / "a.png", np.zeros((8, 8, 3), np.uint8))
    write_image(tmp_path / "src" / "a.PNG", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"duplicate image id 'a' \(a.PNG and a.png\)"):
        convert_images(tmp_path / "src", tmp_path / "jpg", n_images=2, size=8)
    assert not (tmp_path / "jpg").exists()


def test_unreadable_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()

    def denied(self: Path):  # root ignores chmod 000, so the refusal is simulated
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(DataError, match=f"{folder}: cannot read the masks folder "
                                        r"\(Permission denied\)"):
        list_images(folder, what="masks")


def test_hidden_temporary_files_are_not_images(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / ".a.jpg.x1y2.jpg").write_bytes(b"\xff\xd8 half a jpg")  # a killed write's temp
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg"]


# --- kills -----------------------------------------------------------------------------------

TRAIN_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from ndmha.io import setup_logging
from ndmha.models.layers import set_backend
from ndmha.train import TrainSettings, train
setup_logging(sys.argv[5])
set_backend("torch")
loss = {"l1": 1.0, "adversarial": 0.01, "perceptual": 0.1, "edge": 0.5}
train(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4],
      TrainSettings(architecture="ndmha", epochs=3, batch_size=2, loss=loss, seed=0, device="cpu",
                    perceptual={"allow_random_perceptual": True}))
"""


def _train_cmd(manifest: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", TRAIN_SCRIPT, str(manifest), str(out / "model.pt"),
            str(out / "log.csv"), str(out / "ckpt.pt"), str(out / "train.log")]


def _start(cmd: list[str], output: Path) -> subprocess.Popen:
    """Run ``cmd`` in the background, its stdout and stderr in ``output`` (read if it fails)."""
    with open(output, "w") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)


def _wait_for(predicate, process: subprocess.Popen, output: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, (f"the process ended (exit {process.returncode}) before "
                                        f"it could be killed:\n{output.read_text()[-3000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_kill_9_during_training_resumes_and_matches_an_uninterrupted_run(manifest: Path,
                                                                         tmp_path: Path) -> None:
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(_train_cmd(manifest, reference), check=True, capture_output=True)

    process = _start(_train_cmd(manifest, killed), tmp_path / "output.txt")
    _wait_for(lambda: (killed / "ckpt.pt").exists(), process, tmp_path / "output.txt")
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = load_torch(killed / "ckpt.pt")["epoch"]
    assert 1 <= done < 3 and not (killed / "model.pt").exists()

    subprocess.run(_train_cmd(manifest, killed), check=True, capture_output=True)
    assert f"after epoch {done}" in (killed / "train.log").read_text()
    a = load_torch(reference / "model.pt")["state_dict"]
    b = load_torch(killed / "model.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise
    import pandas as pd

    from ndmha.train import TIMING_COLUMNS

    pd.testing.assert_frame_equal(pd.read_csv(killed / "log.csv").drop(columns=TIMING_COLUMNS),
                                  pd.read_csv(reference / "log.csv").drop(columns=TIMING_COLUMNS),
                                  check_exact=True)  # same metrics, epoch by epoch


CONVERT_SCRIPT = """
import sys
from ndmha.data.prepare import convert_images
convert_images(sys.argv[1], sys.argv[2], n_images=int(sys.argv[3]), size=128, threads=1)
"""


def test_kill_9_during_conversion_leaves_no_truncated_jpg(tmp_path: Path) -> None:
    n = 300
    rng = np.random.default_rng(0)
    (tmp_path / "src").mkdir()
    for i in range(n):  # noise compresses badly: large PNGs, slow enough to interrupt
        cv2.imwrite(str(tmp_path / "src" / f"{i:04d}.png"),
                    rng.integers(0, 255, (384, 384, 3), dtype=np.uint8))
    out, stage = tmp_path / "jpg", tmp_path / "jpg.partial"
    cmd = [sys.executable, "-c", CONVERT_SCRIPT, str(tmp_path / "src"), str(out), str(n)]
    process = _start(cmd, tmp_path / "output.txt")
    # count complete JPGs only: pathlib's glob also matches the hidden temporary file of the
    # write in progress, which made this test kill after 19 JPGs now and then
    _wait_for(lambda: stage.is_dir() and len(list_images(stage)) >= 20, process,
              tmp_path / "output.txt")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()  # the output folder appears only when complete
    written = list_images(stage)
    assert 20 <= len(written) < n, f"{len(written)} of {n} JPGs written when killed"
    for jpg in written:
        read_image(jpg)  # every visible JPG decodes: none is truncated

    subprocess.run(cmd, check=True, capture_output=True)
    final = list_images(out)
    assert len(final) == n and not stage.exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    for jpg in final:
        assert read_image(jpg).shape == (128, 128, 3)


def test_kill_9_of_snakemake_leaves_a_lock_that_the_documented_unlock_removes(tmp_path: Path
                                                                               ) -> None:
    """A hard kill of Snakemake itself (power loss, the OOM killer) leaves its lock: the next run
    stops with LockException, and README's recovery (``--unlock``, then the same command) works,
    redoing the job that was cut off (rerun-incomplete in the default profile)."""
    from test_workflow import TINY, snakemake_command

    cmd = snakemake_command(tmp_path, TINY, "--cores", "2", "--until", "split")
    with open(tmp_path / "first.txt", "w") as fh:  # its own process group: kill it all, as -9
        process = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    locks = tmp_path / ".snakemake" / "locks"
    started = tmp_path / TINY["results_dir"] / "logs" / "demo_data.log"
    _wait_for(lambda: started.exists() and locks.is_dir() and any(locks.iterdir()), process,
              tmp_path / "first.txt")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    config = ["--configfile", str(tmp_path / "config.yaml")]
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode != 0
    assert "LockException" in again.stdout + again.stderr
    assert "--unlock" in again.stdout + again.stderr

    readme = (ROOT / "README.md").read_text()
    assert "snakemake --unlock" in readme and "LockException" in readme
    unlock = subprocess.run([*cmd[:cmd.index("--configfile")], *config, "--unlock"],
                            capture_output=True, text=True)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = tmp_path / TINY["results_dir"] / "data" / "manifest.csv"
    assert len(manifest.read_text().splitlines()) == 1 + TINY["data"]["n_images"]


# --- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """A factory of small tmpfs filesystems (root: mount); unmounted afterwards."""
    mounts: list[Path] = []

    def make(size: str) -> Path:
        mount = tmp_path / f"disk{len(mounts)}"
        mount.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}); "
                        "test_disk_full_message_when_faked covers the message")
        mounts.append(mount)
        return mount

    yield make
    for mount in mounts:
        subprocess.run(["umount", str(mount)], check=False)


def _no_leftovers(folder: Path) -> None:
    """No temporary file of a failed write, and every visible file complete."""
    assert [p for p in folder.rglob(".*") if p.is_file() and p.name != ".fingerprint.json"] == []
    for path in folder.rglob("*.png"):
        read_image(path)
    for path in folder.rglob("*.pt"):
        load_torch(path)


def test_every_writer_names_a_full_disk(small_disk) -> None:
    import pandas as pd

    from ndmha.errors import DiskFullError
    from ndmha.figures import data_samples  # noqa: F401  (matplotlib set up as the workflow does)
    from ndmha.figures import _save
    from ndmha.io import atomic_open, write_bytes, write_json
    from ndmha.model_files import save_torch

    disk = small_disk("1m")
    rng = np.random.default_rng(0)
    with pytest.raises(DiskFullError):  # fill it: noise PNGs do not compress
        for i in range(100):
            write_image(disk / "images" / f"{i:03d}.png",
                        rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    for i in range(1000):  # and the last pages (tmpfs allocates 4 kB at a time)
        try:
            write_bytes(disk / "filler" / f"{i:04d}.bin", b"x" * 4096)
        except DiskFullError:
            break
    import matplotlib.pyplot as plt

    def table(path: Path) -> None:
        with atomic_open(path, newline="") as fh:
            pd.DataFrame({"x": range(20000)}).to_csv(fh, index=False)

    writers = {
        "image.png": lambda p: write_image(p, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)),
        "last.pt": lambda p: save_torch({"w": torch.rand(64, 1024)}, p),
        "summary.json": lambda p: write_json(p, {"values": list(range(20000))}),
        "table.csv": table,
        "figure.png": lambda p: _save(plt.figure(figsize=(8, 8)), p),
        "blob.bin": lambda p: write_bytes(p, b"x" * 200_000),
    }
    for name, write in writers.items():
        path = disk / "out" / name
        with pytest.raises(DiskFullError) as err:
            write(path)
        message = str(err.value)
        assert err.value.errno == errno.ENOSPC
        assert message.startswith(f"{path}: cannot write, no space left on device (")
        assert "free of 1.0 MB on the filesystem of" in message and "\n" not in message, message
        assert not path.exists(), name
    _no_leftovers(disk)


def test_workflow_stops_on_a_full_disk_with_one_line(small_disk, tmp_path: Path) -> None:
    """The issue's case: the demo's results on a tiny filesystem. The demo_data rule stops with
    one line naming the file and the space left, and leaves no half-written file."""
    from test_workflow import TINY, snakemake_command

    disk = small_disk("300k")
    config = {**TINY, "results_dir": str(disk / "results"),
              "demo": {**TINY["demo"], "image_size": 256}}
    result = subprocess.run(snakemake_command(tmp_path / "work", config, "--cores", "1",
                                              "--until", "demo_data"),
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    line = next(l for l in output.splitlines() if l.startswith("Error in rule demo_data:"))
    assert "cannot write, no space left on device" in line and "free of 307.2 kB" in line, line
    assert str(disk / "results" / "demo" / "images.partial") in line
    _no_leftovers(disk)


def test_disk_full_message_when_faked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no small filesystem can be mounted: the same message from a faked ENOSPC."""
    from ndmha.errors import DiskFullError

    def full(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(DiskFullError, match=r"a.png: cannot write, no space left on device \("
                                            r"[0-9.]+ [kMGT]?B free of [0-9.]+ [kMGT]?B on the "
                                            "filesystem of "):
        write_image(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


# --- untrusted files ---------------------------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_load_weights_only(tmp_path: Path) -> None:
    payload = _Payload()
    payload.marker = tmp_path / "PWNED"
    torch.save({"model": "baseline", "state_dict": {}, "extra": payload}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        load_torch(tmp_path / "evil.pt")
    assert not payload.marker.exists()


def test_config_yaml_is_loaded_safely(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    (tmp_path / "bad.yaml").write_text(
        f'results_dir: !!python/object/apply:os.system ["touch {marker}"]\n')
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
                             "--directory", str(tmp_path), "--configfile",
                             str(tmp_path / "bad.yaml"), "-n"], capture_output=True, text=True)
    assert result.returncode != 0 and "not valid JSON or YAML" in result.stdout + result.stderr
    assert not marker.exists()
