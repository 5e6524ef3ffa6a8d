"""Named public datasets: download on first use into a cache folder, or resolve a local folder."""

from __future__ import annotations

import difflib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from toolkit.errors import DataError

log = logging.getLogger(__name__)

CYCLEGAN_BASE_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets"

# Environment variable that replaces CYCLEGAN_BASE_URL, e.g. for a mirror or a local test server.
BASE_URL_VARIABLE = "TOOLKIT_DATA_URL"

# Each zip contains a folder <name>/ with trainA, trainB, testA and testB.
DATASETS: dict[str, str] = {
    name: f"{CYCLEGAN_BASE_URL}/{name}.zip"
    for name in (
        "apple2orange",
        "summer2winter_yosemite",
        "horse2zebra",
        "monet2photo",
        "cezanne2photo",
        "ukiyoe2photo",
        "vangogh2photo",
        "iphone2dslr_flower",
        "maps",
        "facades",
        "cityscapes",
    )
}
# NOTE: cat2dog is served by the DRIT authors, not the CycleGAN server, and this URL is
# unverified. TOOLKIT_DATA_URL does not replace it.
DATASETS["cat2dog"] = "http://vllab.ucmerced.edu/hylee/DRIT/datasets/cat2dog.zip"

# Extra advice for datasets whose zip may be unavailable.
# NOTE: the CycleGAN authors' download script declines 'cityscapes' for license reasons,
# so its zip is probably missing from the server (unverified).
_MANUAL_HINTS = {
    "cityscapes": (
        "The CycleGAN authors do not redistribute Cityscapes for license reasons: register at "
        "https://www.cityscapes-dataset.com, download the photos and label maps, and arrange them as "
        "trainA/ (photos), trainB/ (label maps), testA/ and testB/."
    ),
}

DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK_BYTES = 1 << 20


def dataset_url(name: str) -> str:
    """Return the download URL of dataset ``name``, with ``$TOOLKIT_DATA_URL`` replacing the CycleGAN server."""
    url = DATASETS[name]
    base = os.environ.get(BASE_URL_VARIABLE)
    if base and url.startswith(CYCLEGAN_BASE_URL + "/"):
        url = base.rstrip("/") + url[len(CYCLEGAN_BASE_URL) :]
    return url


def data_cache_dir() -> Path:
    """Return the dataset cache: ``$TOOLKIT_DATA``, else ``$XDG_CACHE_HOME/toolkit/datasets`` or ``~/.cache/toolkit/datasets``."""
    explicit = os.environ.get("TOOLKIT_DATA")
    if explicit:
        return Path(explicit).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "toolkit" / "datasets"


def fetch_dataset(name: str, cache_dir: str | Path | None = None) -> Path:
    """Return ``<cache>/<name>``, downloading and extracting the dataset's zip first if it has no trainA.

    The zip is downloaded to a temporary file in the cache, with a progress bar on a
    terminal, and extracted into a temporary folder there. Its ``<name>/`` folder is then
    moved into place with one rename, so an interrupted download leaves no partial
    dataset. Raises DataError, with instructions for a manual download, when the
    download fails or the archive is invalid.
    """
    if name not in DATASETS:
        raise DataError(_unknown_name_message(name, f"unknown dataset '{name}'; the named datasets are"))
    cache = Path(cache_dir).expanduser() if cache_dir is not None else data_cache_dir()
    target = cache / name
    if (target / "trainA").is_dir():
        return target
    if target.exists() and not _is_empty_dir(target):
        nested = ""
        if (target / name / "trainA").is_dir():
            nested = f" (the data are one level deeper, in '{target / name}': move its contents up)"
        raise DataError(
            f"dataset folder '{target}' exists but has no trainA/{nested}; remove it so that '{name}' can be "
            f"downloaded again, or complete it by hand: {_manual_instructions(name, cache)}"
        )

    url = dataset_url(name)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        descriptor, archive_name = tempfile.mkstemp(dir=cache, prefix=f".{name}-", suffix=".zip.part")
    except OSError as error:
        raise DataError(
            f"the dataset cache '{cache}' is not writable ({error}); set TOOLKIT_DATA to a writable folder"
        ) from None
    os.close(descriptor)
    archive = Path(archive_name)
    staging = None
    try:
        log.info("downloading dataset '%s' from %s to %s", name, url, cache)
        _download(url, archive, name, cache)
        staging = Path(tempfile.mkdtemp(dir=cache, prefix=f".{name}-extract-"))
        extracted = _extract(archive, staging, name, url)
        if _is_empty_dir(target):
            target.rmdir()
        try:
            os.replace(extracted, target)
        except OSError:
            # Another process may have finished the same download first.
            if not (target / "trainA").is_dir():
                raise
        log.info("dataset '%s' is ready in %s", name, target)
    finally:
        archive.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_data(name_or_path: str | Path) -> Path:
    """Return the data folder for ``--data``: an existing folder, or a named dataset (downloaded if needed)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if str(name_or_path) in DATASETS:
        return fetch_dataset(str(name_or_path))
    if path.exists():
        raise DataError(
            f"data path '{name_or_path}' is a file, not a folder; unzip it and pass the folder that contains trainA/"
        )
    message = _unknown_name_message(
        str(name_or_path),
        f"data folder '{name_or_path}' not found; pass a folder with trainA/, trainB/, ... or a dataset name",
    )
    if path.parent.is_dir():
        siblings = [child.name for child in path.parent.iterdir() if child.is_dir()]
        close = difflib.get_close_matches(path.name, siblings, n=1, cutoff=0.8)
        if close:
            message += f" Did you mean the folder '{path.parent / close[0]}'?"
    raise DataError(message)


def _unknown_name_message(name: str, opening: str) -> str:
    message = f"{opening}: {', '.join(DATASETS)}"
    close = difflib.get_close_matches(name, list(DATASETS), n=3, cutoff=0.6)
    if close:
        message += "; did you mean " + " or ".join(f"'{candidate}'" for candidate in close) + "?"
    return message


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _manual_instructions(name: str, cache: Path) -> str:
    instructions = (
        f"download {dataset_url(name)} by hand and unzip it "
        f"into '{cache}' so that '{cache / name / 'trainA'}' exists, then pass `--data {name}` again; "
        "or unzip it anywhere and pass the folder that contains trainA/ as `--data`"
    )
    hint = _MANUAL_HINTS.get(name)
    return f"{instructions}. {hint}" if hint else instructions


def _download(url: str, destination: Path, name: str, cache: Path) -> None:
    """Copy ``url`` to ``destination``; raise DataError with manual instructions on any network failure."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, destination.open("wb") as file:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=None) as bar:
                while chunk := response.read(_CHUNK_BYTES):
                    file.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        error.close()
        raise DataError(_failure(name, url, cache, f"the server returned HTTP {error.code} {error.reason}")) from None
    except urllib.error.URLError as error:
        raise DataError(_failure(name, url, cache, f"the server could not be reached ({error.reason})")) from None
    except TimeoutError:
        raise DataError(_failure(name, url, cache, f"no data for {DOWNLOAD_TIMEOUT_S:g} seconds (timed out)")) from None
    except (OSError, http.client.HTTPException) as error:
        raise DataError(_failure(name, url, cache, f"{type(error).__name__}: {error}")) from None

    if total is not None and received != total:
        raise DataError(_failure(name, url, cache, f"the connection closed after {received} of {total} bytes"))


def _failure(name: str, url: str, cache: Path, reason: str) -> str:
    return f"downloading dataset '{name}' from {url} failed: {reason}. To continue offline, {_manual_instructions(name, cache)}"


def _extract(archive: Path, staging: Path, name: str, url: str) -> Path:
    """Extract ``archive`` into ``staging`` and return the folder in it that contains trainA."""
    try:
        with zipfile.ZipFile(archive) as zip_file:
            for member in zip_file.namelist():
                if _is_unsafe_member(member):
                    raise DataError(
                        f"the archive of dataset '{name}' from {url} contains the unsafe path '{member}' "
                        "(absolute or with '..'); it was not extracted. Check the server or TOOLKIT_DATA_URL"
                    )
            zip_file.extractall(staging)
    except zipfile.BadZipFile as error:
        raise DataError(
            f"the file downloaded for dataset '{name}' from {url} is not a valid zip archive ({error}); "
            "the server may have returned an error page. Try again, or download it by hand"
        ) from None

    for candidate in (staging / name, staging):
        if (candidate / "trainA").is_dir():
            return candidate
    raise DataError(
        f"the archive of dataset '{name}' from {url} has no '{name}/trainA/' folder; "
        f"it contains: {', '.join(sorted(path.name for path in staging.iterdir())) or 'nothing'}"
    )


def _is_unsafe_member(member: str) -> bool:
    normalized = member.replace("\\", "/")
    path = PurePosixPath(normalized)
    has_drive = len(normalized) > 1 and normalized[1] == ":"
    return path.is_absolute() or has_drive or ".." in path.parts
