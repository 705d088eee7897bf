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
- ``off`` (or YAML's ``false``, which a bare ``off`` is): a metric's key switches the metric off
  (its column reads ``off``). The perceptual loss has no such switch: with its term weighed, the
  config check refuses ``off``; a weight of 0 (``loss.ndmha.perceptual: 0``) takes the term out of
  the objective instead, and then no VGG19 is needed (:func:`perceptual_off`).

This module imports no torch (Snakemake's check of the config at every DAG build stays fast);
:func:`fetch` downloads with urllib, as torch.hub does, with a read timeout and retries.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import sys
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
#: the config key whose file the perceptual loss needs (it cannot be switched off: see below)
PERCEPTUAL_KEY = "perceptual.vgg19_weights"
#: what to do instead of fetching, by key: a metric can be switched off, the perceptual loss not
#: (its term is taken out of the objective by its weight)
ZERO_WEIGHT = "its weight 0 (loss.<architecture>.perceptual: 0)"
OFF_ADVICE = {PERCEPTUAL_KEY: f"or train without the perceptual term: {ZERO_WEIGHT}"}


def perceptual_off(weighed: dict[str, float] | None = None) -> str:
    """The one error for ``perceptual.vgg19_weights: off`` while the term is weighed: the keys
    that weigh it (``weighed``: key -> weight, where the caller knows them), and the advice,
    which works when followed literally: those keys set to 0."""
    where = (", ".join(f"{k} is {w}" for k, w in (weighed or {}).items())
             or "the objective weighs it")
    zero = ", ".join(f"{k}: 0" for k in weighed) if weighed else ZERO_WEIGHT
    return (f"{PERCEPTUAL_KEY}: off cannot switch the perceptual loss off ({where}); fetch VGG19 "
            f"with {FETCH_COMMAND}, give its path, or train without the term: {zero}")


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
                f"{FETCH_COMMAND}, give its path, {self.instead}")

    @property
    def instead(self) -> str:
        return OFF_ADVICE.get(self.key, f"or set {self.key}: off")


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

#: seconds without a byte before a read gives up (``--timeout``), and the tries of each file
#: (``--tries``): torch.hub's ``download_url_to_file`` opens its connection without a timeout, so
#: a server that stops sending keeps it waiting forever, and it reads a body cut short of its
#: Content-Length as whole (the hash check then says "invalid hash value"). The loop below is
#: torch.hub's (temporary file beside the target, SHA-256 while streaming, rename when right)
#: with a timeout, retries, and the bytes received counted against the announced length.
READ_TIMEOUT_S = 30
TRIES = 3
CHUNK = 1 << 17
#: where a download lands until its hash is checked (``<file>.partial``); any left by a killed
#: fetch (or torch.hub's ``<file>.<uuid>.partial``) is removed when the file is fetched again
PARTIAL = ".partial"


class Interrupted(OSError):
    """A download that stopped early: no bytes for ``timeout`` seconds, or a body shorter than
    its Content-Length."""


def kilobytes(count: int) -> str:
    return f"{count / 1000:,.0f} kB" if count >= 1000 else f"{count} B"


def _download(url: str, partial: Path, timeout: float, progress: bool, label: str) -> str:
    """One try: the body of ``url`` into ``partial``; its SHA-256. :class:`Interrupted` names
    the host and the bytes received when the server stalls or closes early."""
    import hashlib
    import socket
    import urllib.parse
    import urllib.request

    from tqdm.auto import tqdm

    host = urllib.parse.urlsplit(url).netloc
    sha, received, size = hashlib.sha256(), 0, None
    request = urllib.request.Request(url, headers={"User-Agent": "ndmha"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, \
                open(partial, "wb") as out, \
                tqdm(total=None, unit="B", unit_scale=True, desc=label,
                     disable=not progress) as bar:
            length = response.headers.get("Content-Length")
            size = int(length) if length and length.isdigit() else None
            bar.total = size
            while chunk := response.read1(CHUNK):  # what has arrived, counted honestly
                out.write(chunk)
                sha.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except (socket.timeout, TimeoutError) as error:
        of = f" of {kilobytes(size)}" if size else ""
        raise Interrupted(f"{host} sent nothing for {timeout:g} s after {kilobytes(received)}"
                          f"{of}") from error
    except http.client.IncompleteRead as error:
        received += len(error.partial)
        raise Interrupted(f"{host} closed the connection after {kilobytes(received)} of "
                          f"{kilobytes(size or received + (error.expected or 0))}: the "
                          f"download was cut off") from error
    if size is not None and received < size:
        raise Interrupted(f"{host} closed the connection after {kilobytes(received)} of "
                          f"{kilobytes(size)}: the download was cut off")
    return sha.hexdigest()


def fetch(spec: Weights, folder: Path | None = None, mirror: str | None = None,
          progress: bool = True, timeout: float = READ_TIMEOUT_S, tries: int = TRIES,
          wait: float = 2.0) -> tuple[Path, str]:
    """Download one published file into ``folder`` (default torch's hub cache), unless a file
    with its hash is there already: ``(path, "present" | "fetched")``.

    The body goes to ``<file>.partial`` beside the target, its SHA-256 prefix is checked and only
    then is it renamed: an interrupted or wrong download leaves nothing under the published name.
    A read that waits ``timeout`` seconds for a byte, or a body cut short of its Content-Length,
    is tried again (``tries`` in all, ``wait`` seconds apart, doubling); the error names the host
    and the bytes received. A file already there that does not match is named and left as it is
    (:class:`WeightsError`). ``mirror`` (or ``$NDMHA_WEIGHTS_MIRROR``): a base URL serving the
    files under their published names, instead of the publishers' URLs."""
    import time
    import urllib.error

    folder = Path(folder) if folder else hub_dir()
    target = folder / spec.file
    tries = max(1, tries)
    if target.is_file():
        sha = file_sha256(target)
        if sha.startswith(spec.hash_prefix):
            return target, "present"
        raise WeightsError(f"{target}: its SHA-256 starts {sha[:8]}, not the published "
                           f"{spec.hash_prefix}; it is not used: delete it and fetch again")
    mirror = mirror or os.environ.get(MIRROR_ENV)
    url = f"{mirror.rstrip('/')}/{spec.file}" if mirror else spec.url
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(f"{spec.file}.*partial"):  # a killed fetch's
        leftover.unlink(missing_ok=True)
    partial = folder / (spec.file + PARTIAL)
    try:
        for attempt in range(1, tries + 1):
            try:
                sha = _download(url, partial, timeout, progress, spec.file)
                break
            except Interrupted as error:
                if attempt == tries:
                    raise WeightsError(f"{url}: {error} ({tries} tries); nothing was written "
                                       f"to {target}") from error
                print(f"{spec.file}: {error}; trying again ({attempt + 1} of {tries})",
                      file=sys.stderr)
                time.sleep(wait * 2 ** (attempt - 1))
            except urllib.error.HTTPError as error:  # 404, 403: a retry will not help
                raise WeightsError(f"{url}: HTTP {error.code} {error.reason}; nothing was "
                                   f"written to {target}") from error
            except (OSError, http.client.HTTPException) as error:  # unreachable
                raise WeightsError(f"{url}: {getattr(error, 'reason', error)}; nothing was "
                                   f"written to {target}") from error
        if not sha.startswith(spec.hash_prefix):
            raise WeightsError(f"{url}: the download is not {spec.file} (its SHA-256 starts "
                               f"{sha[:8]}, the published one {spec.hash_prefix}); nothing was "
                               f"written to {target}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    file_sha256(target)  # remember it as checked
    return target, "fetched"
