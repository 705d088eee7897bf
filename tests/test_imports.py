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


@pytest.mark.parametrize("module", ["ndmha.workflow", "ndmha.gpus", "ndmha.config",
                                    "ndmha.environment"])
def test_what_every_job_and_the_dag_build_import_loads_no_torch(module: str) -> None:
    # every rule's script runs through ndmha.workflow; a data job that imported torch would pay
    # its ~2 s import for nothing, and the DAG build reads the config at every snakemake call
    assert loaded(module, ["torch"]) == []
