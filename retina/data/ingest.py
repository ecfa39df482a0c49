"""The ingest index: what is known of every source file a cache folder has seen, so a start
reads no byte of a source that did not change.

``<cache folder>/index.csv`` has one row per source file, keyed by what ``os.stat`` says
of it (no byte read): its absolute path, size, modification time (ns) and inode. It
records the file's SHA-256 (the cached PNG's name), the cached PNG's size (a truncated
entry is noticed without reading it), the gradability flags of the source photo, and,
for a file that could not be cached, why. A file whose size, mtime or inode changed, or
whose cached PNG is missing or of another size, is ingested again.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from retina.files import write_atomically

INDEX_FILE = "index.csv"
LOCK_FILE = ".index.lock"
KEY_COLUMNS = ["source", "size", "mtime_ns", "inode"]
COLUMNS = [*KEY_COLUMNS, "sha256", "cached_bytes", "gradability", "problem"]
_TYPES = {"size": "int64", "mtime_ns": "int64", "inode": "int64", "cached_bytes": "int64"}


def stat_key(path: Path) -> tuple[str, int, int, int] | None:
    """(absolute path, size, mtime in ns, inode), or None when there is no such file."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return str(path), found.st_size, found.st_mtime_ns, found.st_ino


class IngestIndex:
    """The index of one cache folder."""

    def __init__(self, folder: Path, suffix: str = ".png"):
        self.folder = Path(folder)
        self.suffix = suffix  # of the cached images
        self.path = self.folder / INDEX_FILE
        self.table = self._read()

    def _read(self) -> pd.DataFrame:
        if not self.path.is_file():
            return pd.DataFrame(columns=COLUMNS).astype(_TYPES)
        table = pd.read_csv(self.path, dtype=str, keep_default_na=False)
        table = table.drop_duplicates("source", keep="last").astype(_TYPES)
        return table.set_index("source", drop=False)

    def known(self, key: tuple) -> dict | None:
        """The record of a source with exactly this stat key whose cached PNG is intact (or
        that is known to be unusable); None when it must be ingested."""
        source = key[0]
        if source not in self.table.index:
            return None
        row = self.table.loc[source]
        if (row["size"], row["mtime_ns"], row["inode"]) != key[1:]:
            return None
        if row["problem"]:
            return row.to_dict()
        cached = self.folder / f"{row['sha256']}{self.suffix}"
        try:
            intact = cached.stat().st_size == row["cached_bytes"]
        except OSError:
            intact = False
        return row.to_dict() if intact else None

    def record(self, records: list[dict]) -> None:
        """Adds (or replaces) records and saves, merged with what other processes saved
        meanwhile (parallel sweep jobs share a cache folder)."""
        if not records:
            return
        new = pd.DataFrame(records, columns=COLUMNS).astype(_TYPES)
        with self._locked():
            current = self._read()
            merged = pd.concat([current[~current.index.isin(new["source"])], new])
            write_atomically(self.path, lambda file: merged.to_csv(file, index=False))
            self.table = merged.set_index("source", drop=False)

    @contextmanager
    def _locked(self):
        with open(self.folder / LOCK_FILE, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
