"""Offline preprocessing into a content-addressed cache of fixed-size PNGs.

A cached file is named by the SHA-256 of the source file's bytes, inside a folder named
by the hash of the preprocessing config: a changed scan or a changed config re-does only
what changed, and the tf.data stream reads nothing but these files. The folder's ingest
index (``retina.data.ingest``) remembers what every source file gave, so an unchanged
file is never read again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from retina.config import CacheFormat, DataConfig, PreprocessConfig
from retina.data.fundus import gradability_flags, preprocess_fundus
from retina.data.images import read_image_rgb
from retina.data.ingest import KEY_COLUMNS, IngestIndex, stat_key
from retina.data.parallel import run_parallel
from retina.errors import DataError
from retina.files import file_sha256, text_sha256, write_atomically

GRADABILITY_KEY = "retina-gradability"
JPEG_QUALITY = 95
JPEG_FROM_SIZE = 384  # cache_format=auto: the size from which PNG decoding starves the stream
SUFFIXES = {CacheFormat.png: ".png", CacheFormat.jpeg: ".jpg"}
# Part of every cache key: bump it whenever a change to retina/preprocess.py changes its
# output, so no run mixes images preprocessed by two versions of the code.
PREPROCESS_VERSION = 2


def cache_format(cfg: PreprocessConfig) -> CacheFormat:
    """``preprocess.cache_format`` with ``auto`` resolved: PNG (lossless) for small images,
    JPEG at quality 95 from 384 px, where PNG decodes too slowly to feed a GPU."""
    if cfg.cache_format != CacheFormat.auto:
        return CacheFormat(cfg.cache_format)
    return CacheFormat.jpeg if cfg.image_size >= JPEG_FROM_SIZE else CacheFormat.png


def config_key(cfg: PreprocessConfig) -> str:
    """Names the cache folder for one preprocessing config."""
    text = json.dumps({**asdict(cfg), "version": PREPROCESS_VERSION}, sort_keys=True)
    return f"{cfg.image_size}px-" + text_sha256(text)[:12]


def build_cache(
    manifest: pd.DataFrame,
    data_root: str | Path,
    cfg: PreprocessConfig,
    cache_dir: str | Path,
    workers: int = 0,
    salt: str = DataConfig.id_salt,
) -> tuple[pd.DataFrame, list[dict]]:
    """Ingests every scan the index does not know yet (hash, preprocess, cache), in
    parallel, and returns where each scan's cached PNG is.

    A scan whose file is unchanged since it was ingested (same size, mtime and inode) and
    whose cached PNG is intact is not read at all (``retina.data.ingest``).

    Args:
        manifest: rows with a ``path`` relative to ``data_root``.
        data_root: folder the manifest paths are relative to.
        cfg: the preprocessing to apply.
        cache_dir: root of the cache; one folder per preprocessing config inside.
        workers: processes to use; 0 means one per core.
        salt: ``data.id_salt``, for the pseudonyms the DICOM reader derives.

    Returns:
        A frame aligned with the manifest's index: ``cache_path`` ("" where the scan could
        not be used) and ``gradability`` (its flags, "" when it looked gradable); and a
        problem record (path, reason) for each unusable scan.
    """
    folder = Path(cache_dir) / config_key(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    index = IngestIndex(folder, SUFFIXES[cache_format(cfg)])
    keys = [stat_key(Path(os.path.abspath(Path(data_root) / p))) for p in manifest["path"]]
    records = {key[0]: index.known(key) for key in keys if key is not None}
    todo = sorted({key for key in keys if key is not None and records[key[0]] is None})
    fresh = run_parallel(
        _ingest_one, [(key, folder, cfg, salt) for key in todo], workers, "ingesting"
    )
    index.record(fresh)
    records.update({record["source"]: record for record in fresh})
    return _cache_table(manifest, keys, records, folder, cfg)


def _cache_table(manifest, keys, records: dict, folder: Path, cfg) -> tuple[pd.DataFrame, list]:
    rows, problems = [], []
    for relative, key in zip(manifest["path"], keys, strict=True):
        record = records[key[0]] if key else {"problem": "missing file"}
        if record["problem"]:
            problems.append({"path": relative, "reason": record["problem"]})
            rows.append(("", ""))
        else:
            name = f"{record['sha256']}{SUFFIXES[cache_format(cfg)]}"
            rows.append((str(folder / name), record["gradability"]))
    table = pd.DataFrame(rows, columns=["cache_path", "gradability"], index=manifest.index)
    return table, problems


def _ingest_one(job: tuple) -> dict:
    """One source file into the cache (in a worker process): its index record."""
    key, folder, cfg, salt = job
    source = Path(key[0])
    record = dict(zip(KEY_COLUMNS, key, strict=True), sha256="", cached_bytes=0)
    try:
        record["sha256"] = file_sha256(source)
    except OSError as error:
        return {**record, "gradability": "", "problem": f"unreadable file ({type(error).__name__})"}
    target = folder / f"{record['sha256']}{SUFFIXES[cache_format(cfg)]}"
    # The same bytes cached before (another path, or a lost index): reuse what is intact.
    flags = _intact_flags(target)
    problem = None if flags is not None else _cache_one(source, target, cfg, salt)
    if problem:
        return {**record, "gradability": "", "problem": problem}
    flags = flags if flags is not None else _intact_flags(target)
    return {**record, "cached_bytes": target.stat().st_size, "gradability": flags, "problem": ""}


def _intact_flags(cached: Path) -> str | None:
    """The gradability flags stored in a cached image that decodes whole; None when it is
    missing, damaged or carries none."""
    try:
        with Image.open(cached) as image:
            image.load()
            if image.format == "PNG":
                return image.text.get(GRADABILITY_KEY)
            comment = image.info.get("comment", b"").decode(errors="replace")
    except (OSError, SyntaxError, ValueError):
        return None
    prefix = f"{GRADABILITY_KEY}:"
    return comment.removeprefix(prefix) if comment.startswith(prefix) else None


def _cache_one(source: Path, target: Path, cfg: PreprocessConfig, salt: str) -> str | None:
    """Preprocesses one scan into the cache; returns why it could not, or None.

    The gradability flags of the source photo travel inside the cached PNG (a text chunk),
    so a cache entry and its flags are written, and found, together.
    """
    try:
        image = read_image_rgb(source, salt)
        flags = gradability_flags(image, cfg.fov_threshold) if cfg.gradability else []
        image = preprocess_fundus(image, cfg)
    except DataError as error:
        return str(error).replace(f"{source}: ", "")  # the report names the file already
    # Written whole or not at all; not fsynced: a lost entry is simply made again.
    picture, fmt = Image.fromarray(image), cache_format(cfg)
    write_atomically(target, lambda path: _save(picture, path, flags, fmt), False)
    return None


def _save(image: Image.Image, path: Path, flags: list[str], fmt: CacheFormat) -> None:
    """PNG with the flags in a text chunk, or JPEG with them in its comment."""
    text = "; ".join(flags)
    if fmt == CacheFormat.png:
        info = PngInfo()
        info.add_text(GRADABILITY_KEY, text)
        image.save(path, format="PNG", pnginfo=info)
    else:
        comment = f"{GRADABILITY_KEY}:{text}".encode()
        image.save(path, format="JPEG", quality=JPEG_QUALITY, comment=comment)
