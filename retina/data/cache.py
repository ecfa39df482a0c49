"""Offline preprocessing into a content-addressed cache of fixed-size PNGs.

A cached file is named by the SHA-256 of the source file's bytes, inside a folder named
by the hash of the preprocessing config: a changed scan or a changed config re-does only
what changed, and the tf.data stream reads nothing but these files.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from retina.config import DataConfig, PreprocessConfig
from retina.data.images import read_image_rgb
from retina.errors import DataError
from retina.files import file_sha256, text_sha256, write_atomically
from retina.parallel import run_parallel
from retina.preprocess import gradability_flags, preprocess_fundus

GRADABILITY_KEY = "retina-gradability"
# Part of every cache key: bump it whenever a change to retina/preprocess.py changes its
# output, so no run mixes images preprocessed by two versions of the code.
PREPROCESS_VERSION = 2


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
) -> tuple[pd.Series, list[dict]]:
    """Preprocesses every scan not yet cached, in parallel, and returns the cached paths.

    Args:
        manifest: rows with a ``path`` relative to ``data_root``.
        data_root: folder the manifest paths are relative to.
        cfg: the preprocessing to apply.
        cache_dir: root of the cache; one folder per preprocessing config inside.
        workers: processes to use; 0 means one per core.
        salt: ``data.id_salt``, for the pseudonyms the DICOM reader derives.

    Returns:
        The cached PNG path of each manifest row, aligned with the manifest's index ("" where
        the scan could not be read), and a problem record (path, reason) for each such scan.
    """
    folder = Path(cache_dir) / config_key(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    sources = [Path(data_root) / p for p in manifest["path"]]
    targets = [folder / f"{file_sha256(s)}.png" for s in sources]
    todo = [(s, t, cfg, salt) for s, t in zip(sources, targets, strict=True) if not t.exists()]
    failures = dict(
        zip(
            (job[1] for job in todo),
            run_parallel(_cache_one, todo, workers, "preprocessing"),
            strict=True,
        )
    )
    problems = [
        {"path": rel, "reason": failures[t]}
        for rel, t in zip(manifest["path"], targets, strict=True)
        if failures.get(t)
    ]
    paths = ["" if failures.get(t) else str(t) for t in targets]
    return pd.Series(paths, index=manifest.index), problems


def _cache_one(job: tuple[Path, Path, PreprocessConfig, str]) -> str | None:
    """Preprocesses one scan into the cache; returns why it could not, or None.

    The gradability flags of the source photo travel inside the cached PNG (a text chunk),
    so a cache entry and its flags are written, and found, together.
    """
    source, target, cfg, salt = job
    try:
        image = read_image_rgb(source, salt)
        flags = gradability_flags(image, cfg.fov_threshold) if cfg.gradability else []
        image = preprocess_fundus(image, cfg)
    except DataError as error:
        return str(error).replace(f"{source}: ", "")  # the report names the file already
    text = PngInfo()
    text.add_text(GRADABILITY_KEY, "; ".join(flags))
    # Written whole or not at all; not fsynced: a lost entry is simply made again.
    png = Image.fromarray(image)
    write_atomically(target, lambda path: png.save(path, format="PNG", pnginfo=text), False)
    return None


def gradability_of(cached: str | Path) -> str:
    """The flags stored with a cached image ("" when it looked gradable)."""
    with Image.open(cached) as image:
        return image.text.get(GRADABILITY_KEY, "")
