"""SHA-256 of files and of settings, with nothing but the standard library: the config check,
provenance, the pretrained files and the imported checkpoints hash the same way."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The file's SHA-256, read in chunks (a checkpoint of gigabytes is never held whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """SHA-256 of a JSON-able value, keys sorted (the same settings, the same hash)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def sha256_buffer(data: Any) -> str:
    """SHA-256 of a buffer's bytes, e.g. an image's pixels (a C-contiguous array)."""
    return hashlib.sha256(memoryview(data)).hexdigest()


def set_sha256(members: Any) -> str:
    """One hash of a set of (name, SHA-256) pairs, in name order: the same set, the same hash,
    whatever order it was made in."""
    return hashlib.sha256("".join(f"{n} {h}\n" for n, h in sorted(members)).encode()).hexdigest()
