"""Fetch a public benchmark into a local folder: zip archives are unpacked in place, other files saved as they are.

Only used when a loader is called with ``download=True``. Any failure becomes a :class:`DatasetDownloadError`
that repeats the benchmark's expected layout, so a user without network knows what to put where by hand.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from ._common import BenchmarkInfo, DatasetLayoutError

__all__ = ["DatasetDownloadError", "default_cache_root", "download_file", "resolve_data_dir"]

TIMEOUT_SECONDS = 60  # per connection attempt and per read, not for the whole transfer


class DatasetDownloadError(DatasetLayoutError):
    """A benchmark could not be downloaded; the message says where to put the files by hand."""


def default_cache_root() -> Path:
    """Where downloaded benchmarks go by default: ``metaqap_hf/`` inside the ``datasets`` cache."""
    from datasets import config

    return Path(config.HF_DATASETS_CACHE) / "metaqap_hf"


def resolve_data_dir(
    data_dir: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    info: BenchmarkInfo,
    *,
    download: bool,
) -> Path:
    """The folder a downloadable benchmark is read from (and downloaded into, with ``download=True``).

    ``data_dir`` when given; otherwise ``<cache_dir>/<name>``, ``cache_dir`` defaulting to
    :func:`default_cache_root`. Without ``download`` a ``data_dir`` is required.
    """
    if data_dir is not None and cache_dir is not None:
        raise ValueError("Pass data_dir (the benchmark folder itself) or cache_dir (where to download it), not both.")
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if not download:
        raise ValueError(
            f"{info.pretty_name}: pass data_dir, a folder laid out as below, or download=True.\n{info.layout}"
        )
    return Path(cache_dir if cache_dir is not None else default_cache_root()).expanduser() / info.name


def download_file(
    url: str, destination: Path, info: BenchmarkInfo, *, unpack: bool, strip_top_folder: bool = False
) -> None:
    """Download ``url`` into the folder ``destination``.

    With ``unpack``, the file is a zip archive whose members are extracted into ``destination`` (dropping the
    archive's single top folder when ``strip_top_folder``, as in GitHub's ``<repo>-<branch>/`` archives);
    otherwise it is saved under its own name. Work happens in a temporary folder inside ``destination`` so that
    a broken transfer leaves no half-written files behind.
    """
    destination.mkdir(parents=True, exist_ok=True)
    file_name = url.rstrip("/").rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory(dir=destination, prefix=".download-") as scratch:
        scratch_dir = Path(scratch)
        local_file = scratch_dir / file_name
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, local_file.open("wb") as handle:
                shutil.copyfileobj(response, handle, length=1 << 20)
            if unpack:
                unpacked = scratch_dir / "unpacked"
                with zipfile.ZipFile(local_file) as archive:
                    archive.extractall(unpacked)
                top_entries = list(unpacked.iterdir())
                single_folder = len(top_entries) == 1 and top_entries[0].is_dir()
                source = top_entries[0] if strip_top_folder and single_folder else unpacked
                for entry in source.iterdir():
                    _move_into(entry, destination / entry.name)
            else:
                _move_into(local_file, destination / file_name)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise DatasetDownloadError(
                f"Could not download {info.pretty_name} from {url}: {error}. Download it by hand (see "
                f"{info.homepage}) and arrange it as follows, then pass that folder as data_dir.\n{info.layout}"
            ) from error


def _move_into(source: Path, target: Path) -> None:
    """Move a file or folder to ``target``, merging folders that already exist there."""
    if source.is_dir() and target.is_dir():
        for entry in source.iterdir():
            _move_into(entry, target / entry.name)
    else:
        shutil.move(str(source), str(target))
