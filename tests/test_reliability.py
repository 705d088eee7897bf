"""Reliability: bad data, kills during training and conversion, untrusted files.

Each case is listed in docs/reliability.md with the test that proves it.
"""

from __future__ import annotations

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
from ndmha.train import load_torch

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
    assert "3 of 4 PNGs were converted" in caplog.text and "b_rgba.png: alpha" in caplog.text
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
from ndmha.train import TrainSettings, train
setup_logging(sys.argv[5])
loss = {"l1": 1.0, "adversarial": 0.01, "perceptual": 0.1, "edge": 0.5}
train(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4],
      TrainSettings(model="ndmha", epochs=3, batch_size=2, loss=loss, seed=0, device="cpu",
                    deform_backend="torch", perceptual={"allow_random_perceptual": True}))
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
    drop_time = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]  # noqa: E731
    assert drop_time((killed / "log.csv").read_text()) == \
        drop_time((reference / "log.csv").read_text())  # same metrics, epoch by epoch


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
