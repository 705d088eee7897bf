"""The pretrained files the objective and the metrics need: where they are looked for, how they
are checked, and how they are fetched.

Three networks, none trained here: VGG19 for the perceptual loss, AlexNet (or VGG16) for LPIPS,
and torch-fidelity's Inception-v3 for FID / KID. Each is a file its publisher names after the
first hex digits of its SHA-256 (torch.hub's convention: ``vgg19-dcbb9e9d.pth``); a file is used
only when its own SHA-256 starts with them, whatever it is called.

Where a config key names a file:
- an explicit path (``weights/vgg19-dcbb9e9d.pth``, ``/data/vgg19.pth``): that file alone;
- empty, or a file name alone (``vgg19-dcbb9e9d.pth``): torch's hub cache,
  ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``), where torchvision
  and torch-fidelity put these files the first time they download them;
- ``off`` (or YAML's ``false``): the metric is switched off.

This module imports no torch (Snakemake's check of the config at every DAG build stays fast);
:func:`fetch` imports it to download with ``torch.hub.download_url_to_file``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ndmha.errors import DataError
from ndmha.hashing import sha256_file

#: torch.hub's HASH_REGEX: the SHA-256 prefix in a published file's name
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")
#: a mirror that serves the files under their published names (tests, sites without GitHub)
MIRROR_ENV = "NDMHA_WEIGHTS_MIRROR"
#: the command that fetches them, named in every error about a missing file
FETCH_COMMAND = "python -m ndmha fetch-weights (or: make weights)"


@dataclass(frozen=True)
class Weights:
    """One published file: its name (with the SHA-256 prefix), where its publisher serves it,
    and other names it goes by (the same bytes, checked by the same hash)."""

    name: str
    file: str
    url: str
    use: str
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def hash_prefix(self) -> str:
        return HASH_REGEX.search(self.file).group(1)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.file, *self.aliases)


#: the files, as torchvision (its weights enums) and torch-fidelity (URL_INCEPTION_V3) publish
#: them; tests/test_weights.py checks each URL against the installed packages'
REGISTRY = {
    "vgg19": Weights("vgg19", "vgg19-dcbb9e9d.pth",
                     "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
                     "the perceptual loss (torchvision's ImageNet VGG19)"),
    "alexnet": Weights("alexnet", "alexnet-owt-7be5be79.pth",
                       "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                       "LPIPS with net: alex (torchvision's ImageNet AlexNet)"),
    "vgg16": Weights("vgg16", "vgg16-397923af.pth",
                     "https://download.pytorch.org/models/vgg16-397923af.pth",
                     "LPIPS with net: vgg (torchvision's ImageNet VGG16)"),
    # torch-fidelity's name; pytorch-fid serves the same bytes as pt_inception-...
    "inception": Weights("inception", "weights-inception-2015-12-05-6726825d.pth",
                         "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         "weights-inception-2015-12-05-6726825d.pth",
                         "FID and KID (torch-fidelity's Inception-v3)",
                         aliases=("pt_inception-2015-12-05-6726825d.pth",)),
}
#: what ``fetch-weights`` fetches without names: the paper's objective and metrics
DEFAULT_FETCH = ("vgg19", "alexnet", "inception")
#: lpips backbone -> registry entry
LPIPS_WEIGHTS = {"alex": "alexnet", "vgg": "vgg16"}


class WeightsError(DataError):
    """A pretrained file missing, or not the published one: the message names the config key,
    the paths searched and the fetch command."""


def hub_dir() -> Path:
    """torch's hub checkpoint folder, as ``torch.hub.get_dir()`` / ``checkpoints`` computes it
    from ``TORCH_HOME`` and ``XDG_CACHE_HOME`` (without importing torch)."""
    home = os.getenv("TORCH_HOME",
                     os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def is_off(value: object) -> bool:
    """A metric switched off in the config (``off``, or YAML's ``false``)."""
    return value is False or (isinstance(value, str) and value.strip().lower() == "off")


def candidates(value: str | None, spec: Weights) -> list[Path]:
    """The paths a config value stands for, in order: an explicit path alone; a file name, or
    nothing, in torch's hub cache."""
    value = (value or "").strip()
    if value and Path(value).name != value:
        return [Path(value)]
    names = (value,) if value else spec.names
    return [hub_dir() / n for n in names]


# -- checking ---------------------------------------------------------------------------------

def _verified_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ndmha" / "verified-weights.json"


def file_sha256(path: Path) -> str:
    """A file's SHA-256, remembered by path, size and modification time: hashing the three
    files (870 MB) takes seconds, and the config check runs at every DAG build."""
    path = path.resolve()
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache_file = _verified_cache()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(str(path), {})
    if {k: entry.get(k) for k in stamp} == stamp and entry.get("sha256"):
        return entry["sha256"]
    sha = sha256_file(path)
    cache[str(path)] = {**stamp, "sha256": sha}
    try:  # atomically, and never fatal: a read-only home only costs the hashing again
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=".verified-")
        with os.fdopen(fd, "w") as fh:
            json.dump(cache, fh)
        os.replace(tmp, cache_file)
    except OSError:
        pass
    return sha


@dataclass
class Located:
    """Where a config key's file was looked for, and what was found: ``path`` (the published
    file), ``off``, or neither, with the ``problem`` (missing, or a file that does not match)."""

    key: str
    spec: Weights
    searched: list[Path]
    path: Path | None = None
    off: bool = False
    problem: str = ""

    @property
    def found(self) -> bool:
        return self.path is not None

    def message(self) -> str:
        """One line: the key, the file, the paths searched, what to do."""
        where = ", ".join(str(p) for p in self.searched)
        return (f"{self.key}: {self.problem} (searched {where}); fetch it with "
                f"{FETCH_COMMAND}, give its path, or set {self.key}: off")


def locate(key: str, value: object, spec: Weights) -> Located:
    """Find the file a config key (``key``, for the messages) names: the first candidate that
    exists; it must carry the publisher's SHA-256 prefix (a file that does not is named in
    ``problem`` and not used)."""
    if is_off(value):
        return Located(key, spec, [], off=True)
    searched = candidates(value if isinstance(value, str) else "", spec)
    for path in searched:
        if path.is_file():
            sha = file_sha256(path)
            if not sha.startswith(spec.hash_prefix):
                return Located(key, spec, searched,
                               problem=f"{path} is not {spec.file}: its SHA-256 starts "
                                       f"{sha[:8]}, the published one {spec.hash_prefix}")
            return Located(key, spec, searched, path=path.resolve())
    return Located(key, spec, searched, problem=f"{spec.file} not found")


def located_path(key: str, value: object, spec: Weights, allow_missing: bool) -> Path | None:
    """The file for a key, None where it is missing or wrong and ``allow_missing`` (the caller
    then reports ``n/a`` or uses random weights); otherwise a missing or wrong file raises
    :class:`WeightsError`. An ``off`` key gives None."""
    found = locate(key, value, spec)
    if found.found or found.off or allow_missing:
        return found.path
    raise WeightsError(found.message())


# -- fetching ---------------------------------------------------------------------------------

def fetch(spec: Weights, folder: Path | None = None, mirror: str | None = None,
          progress: bool = True) -> tuple[Path, str]:
    """Download one published file into ``folder`` (default torch's hub cache), unless a file
    with its hash is there already: ``(path, "present" | "fetched")``.

    ``torch.hub.download_url_to_file`` writes to a temporary file beside the target, checks the
    SHA-256 prefix and only then renames it: an interrupted or wrong download leaves nothing
    under the published name. A file already there that does not match is named and left as it
    is (:class:`WeightsError`). ``mirror`` (or ``$NDMHA_WEIGHTS_MIRROR``): a base URL serving
    the files under their published names, instead of the publishers' URLs."""
    folder = Path(folder) if folder else hub_dir()
    target = folder / spec.file
    if target.is_file():
        sha = file_sha256(target)
        if sha.startswith(spec.hash_prefix):
            return target, "present"
        raise WeightsError(f"{target}: its SHA-256 starts {sha[:8]}, not the published "
                           f"{spec.hash_prefix}; it is not used: delete it and fetch again")
    mirror = mirror or os.environ.get(MIRROR_ENV)
    url = f"{mirror.rstrip('/')}/{spec.file}" if mirror else spec.url
    import torch.hub

    folder.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=spec.hash_prefix,
                                       progress=progress)
    except RuntimeError as error:  # torch.hub's hash check
        raise WeightsError(f"{url}: the download is not {spec.file} ({error}); nothing was "
                           f"written to {target}") from error
    except (OSError, http.client.HTTPException) as error:  # unreachable, HTTP errors, cut off
        raise WeightsError(f"{url}: {error}; nothing was written to {target}") from error
    file_sha256(target)  # remember it as checked
    return target, "fetched"
