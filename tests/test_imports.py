"""Rooms in their place: what a module loads is what its layer needs. Each check imports one
module in a fresh interpreter and lists which of the package's higher layers came with it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def loaded(module: str, watched: list[str]) -> list[str]:
    code = (f"import json, sys, {module}; "
            f"print(json.dumps([m for m in {watched!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize("module", ["ndmha.evaluate", "ndmha.inpaint"])
def test_inference_imports_no_training_loop(module: str) -> None:
    # inference reads the package's own model.pt (ndmha.model_files), never the importer of
    # foreign files
    assert loaded(module, ["ndmha.train", "ndmha.train.loop", "ndmha.foreign_weights"]) == []


def test_hashing_a_dict_loads_no_config_or_image_code() -> None:
    # provenance hashes the settings; before, that pulled config -> classical -> cv2
    assert loaded("ndmha.provenance", ["ndmha.config", "ndmha.classical", "ndmha.data.masks",
                                       "cv2"]) == []
    assert loaded("ndmha.hashing", ["torch", "ndmha.config"]) == []
