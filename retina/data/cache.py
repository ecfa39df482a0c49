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

from retina.config import DataConfig, PreprocessConfig
from retina.data.cache_entry import SUFFIXES, cache_format, ingest_one
from retina.data.ingest import KEY_COLUMNS, IngestIndex, stat_key
from retina.data.parallel import iter_parallel
from retina.files import text_sha256

# Part of every cache key: bump it whenever a change to the preprocessing
# (retina.data.cache_entry, fundus, images) changes its output, so no run mixes
# images preprocessed by two versions of the code. 3: scaled decoding, Pillow's resize.
PREPROCESS_VERSION = 3
RECORD_EVERY = 500  # scans ingested between saves of the index


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
    jobs = [(Path(key[0]), folder, cfg, salt) for key in todo]
    entries = iter_parallel(ingest_one, jobs, workers, "ingesting")
    pending = []  # saved every RECORD_EVERY scans: an interrupted ingest resumes there
    for key, entry in zip(todo, entries, strict=True):
        pending.append(dict(zip(KEY_COLUMNS, key, strict=True)) | entry)
        records[key[0]] = pending[-1]
        if len(pending) == RECORD_EVERY:
            index.record(pending)
            pending = []
    index.record(pending)
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
