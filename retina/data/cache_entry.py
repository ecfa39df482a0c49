"""One scan into the preprocessing cache: what a worker process of the ingest does.

It imports numpy, Pillow, SciPy and scikit-image (through ``fundus``), never pandas or
TensorFlow: a spawned worker starts in well under a second.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from retina.config import CacheFormat, PreprocessConfig
from retina.data.fundus import (
    GRADABILITY_ROWS,
    fit_circle,
    fov_mask,
    gradability_flags,
    preprocess_fundus,
)
from retina.data.images import read_scaled
from retina.errors import DataError
from retina.files import file_sha256, write_atomically

GRADABILITY_KEY = "retina-gradability"
JPEG_QUALITY = 95
JPEG_FROM_SIZE = 384  # cache_format=auto: the size from which PNG decoding starves the stream
SUFFIXES = {CacheFormat.png: ".png", CacheFormat.jpeg: ".jpg"}


def cache_format(cfg: PreprocessConfig) -> CacheFormat:
    """``preprocess.cache_format`` with ``auto`` resolved: PNG (lossless) for small images,
    JPEG at quality 95 from 384 px, where PNG decodes too slowly to feed a GPU."""
    if cfg.cache_format != CacheFormat.auto:
        return CacheFormat(cfg.cache_format)
    return CacheFormat.jpeg if cfg.image_size >= JPEG_FROM_SIZE else CacheFormat.png


def ingest_one(job: tuple[Path, Path, PreprocessConfig, str]) -> dict:
    """One source file into the cache folder (in a worker process): what the ingest index
    records of it beside its stat key (``retina.data.ingest``)."""
    source, folder, cfg, salt = job
    try:
        sha256 = file_sha256(source)
    except OSError as error:
        return _entry(problem=f"unreadable file ({type(error).__name__})")
    target = folder / f"{sha256}{SUFFIXES[cache_format(cfg)]}"
    # The same bytes cached before (another path, or a lost index): reuse what is intact.
    flags = intact_flags(target)
    if flags is None:
        try:
            flags = _cache_one(source, target, cfg, salt)
        except DataError as error:  # the report names the file already
            return _entry(sha256, problem=str(error).replace(f"{source}: ", ""))
    return _entry(sha256, target.stat().st_size, flags)


def _entry(sha256: str = "", cached_bytes: int = 0, gradability: str = "", problem: str = ""):
    return {
        "sha256": sha256,
        "cached_bytes": cached_bytes,
        "gradability": gradability,
        "problem": problem,
    }


def intact_flags(cached: Path) -> str | None:
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


def _cache_one(source: Path, target: Path, cfg: PreprocessConfig, salt: str) -> str:
    """Preprocesses one scan into the cache; returns its gradability flags (joined by "; ").

    The flags travel inside the cached image (a PNG text chunk, a JPEG comment), so a
    cache entry and its flags are written, and found, together.

    Raises:
        DataError: why the scan cannot be used.
    """
    image, flags = preprocessed(source, cfg, salt)
    text = "; ".join(flags)
    # Written whole or not at all; not fsynced: a lost entry is simply made again.
    picture, fmt = Image.fromarray(image), cache_format(cfg)
    write_atomically(target, lambda path: _save(picture, path, text, fmt), False)
    return text


def preprocessed(
    source: Path, cfg: PreprocessConfig, salt: str, scaled: bool = True
) -> tuple[np.ndarray, list[str]]:
    """The cached image of one scan and its gradability flags, from a decode no finer than
    they need: the shorter side at least the cache's size and the gradability measures'
    rows (``retina.data.images.read_scaled``). A field of view narrower than the cache's
    size at that scale is decoded again, finer. ``scaled=False``: a full decode."""
    needed = max(cfg.image_size, GRADABILITY_ROWS if cfg.gradability else 0)
    min_side = needed if scaled else 0
    image, factor = read_scaled(source, salt, min_side)
    circle = fit_circle(fov_mask(image, cfg.fov_threshold)) if cfg.crop_to_fov else None
    if circle and factor > 1 and 2 * circle[2] < cfg.image_size:
        finer = math.ceil(min(image.shape[:2]) * cfg.image_size / (2 * circle[2]))
        image, _ = read_scaled(source, salt, finer)
        circle = fit_circle(fov_mask(image, cfg.fov_threshold))
    flags = gradability_flags(image, cfg.fov_threshold) if cfg.gradability else []
    return preprocess_fundus(image, cfg, circle), flags


def _save(image: Image.Image, path: Path, text: str, fmt: CacheFormat) -> None:
    """PNG with the flags in a text chunk, or JPEG with them in its comment."""
    if fmt == CacheFormat.png:
        info = PngInfo()
        info.add_text(GRADABILITY_KEY, text)
        image.save(path, format="PNG", pnginfo=info)
    else:
        comment = f"{GRADABILITY_KEY}:{text}".encode()
        image.save(path, format="JPEG", quality=JPEG_QUALITY, comment=comment)
