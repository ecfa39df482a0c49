"""The ingest index: an unchanged source is never read again; a changed one is; a damaged
cache entry is rebuilt before training."""

import os
import shutil

import pandas as pd
import pytest
from PIL import Image

from conftest import smoke_config
from retina.config import PreprocessConfig
from retina.data.cache import build_cache
from retina.data.ingest import INDEX_FILE
from retina.data.synthetic import ensure_synthetic_dataset


@pytest.fixture
def scans(shared_data, tmp_path):
    """A private copy of the smoke set's scans (the tests garble them)."""
    source = shared_data / "synthetic"
    ensure_synthetic_dataset(source, smoke_config(shared_data).data.synthetic, workers=1)
    target = tmp_path / "scans"
    shutil.copytree(source, target)
    return target


def _garble_in_place(paths) -> None:
    """Unreadable bytes of the same size, written into the same inode, mtime put back."""
    for path in paths:
        before = os.stat(path)
        with open(path, "r+b") as handle:
            handle.write(b"\x00" * before.st_size)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert os.stat(path).st_ino == before.st_ino


def _manifest(root):
    labels = pd.read_csv(root / "train.csv", dtype=str)
    paths = [
        next(str(p.relative_to(root)) for p in (root / "train_images").glob(f"{i}.*"))
        for i in labels["id_code"]
    ]
    return pd.DataFrame({"path": paths})


def test_unchanged_sources_are_not_read_and_changed_ones_are(scans, tmp_path):
    cfg, cache = PreprocessConfig(image_size=32), tmp_path / "cache"
    manifest = _manifest(scans)
    first, problems = build_cache(manifest, scans, cfg, cache, workers=1)
    assert not problems and (first["cache_path"] != "").all()
    assert len(pd.read_csv(next(cache.glob(f"*/{INDEX_FILE}")))) == len(manifest)

    sources = [scans / p for p in manifest["path"]]
    _garble_in_place(sources)
    again, problems = build_cache(manifest, scans, cfg, cache, workers=1)
    assert not problems  # nothing was read: the garbled bytes went unnoticed
    pd.testing.assert_frame_equal(again, first)

    touched, resized = sources[0], sources[1]
    os.utime(touched)  # a new mtime: ingested again, and now found unreadable
    resized.write_bytes(resized.read_bytes()[:100])
    changed, problems = build_cache(manifest, scans, cfg, cache, workers=1)
    assert sorted(p["path"] for p in problems) == sorted(manifest["path"][:2])
    pd.testing.assert_frame_equal(changed.iloc[2:], first.iloc[2:])


def test_an_interrupted_ingest_resumes_where_it_stopped(scans, tmp_path, monkeypatch):
    """Ctrl-C after 5 scans, the index saved every 2: a restart reads none of the 4 saved."""
    import retina.data.cache as cache_module

    cfg, cache = PreprocessConfig(image_size=32), tmp_path / "cache"
    manifest = _manifest(scans)
    real_ingest, done = cache_module.ingest_one, []

    def interrupted_after_five(job):
        if len(done) == 5:
            raise KeyboardInterrupt
        done.append(job[0])
        return real_ingest(job)

    monkeypatch.setattr(cache_module, "RECORD_EVERY", 2)
    monkeypatch.setattr(cache_module, "ingest_one", interrupted_after_five)
    with pytest.raises(KeyboardInterrupt):
        build_cache(manifest, scans, cfg, cache, workers=1)
    monkeypatch.undo()
    saved = pd.read_csv(next(cache.glob(f"*/{INDEX_FILE}")))["source"]
    assert sorted(saved) == sorted(map(str, done[:4]))
    _garble_in_place(done[:4])  # unnoticed unless read again
    table, problems = build_cache(manifest, scans, cfg, cache, workers=1)
    assert not problems and (table["cache_path"] != "").all()


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_cache_entry_is_rebuilt(scans, tmp_path, damage):
    cfg, cache = PreprocessConfig(image_size=32), tmp_path / "cache"
    manifest = _manifest(scans).head(3)
    first, _ = build_cache(manifest, scans, cfg, cache, workers=1)
    entry = first["cache_path"].iloc[0]
    original = open(entry, "rb").read()
    if damage == "truncated":
        with open(entry, "r+b") as handle:
            handle.truncate(len(original) // 2)
    else:
        os.remove(entry)
    rebuilt, problems = build_cache(manifest, scans, cfg, cache, workers=1)
    assert not problems and rebuilt["cache_path"].iloc[0] == entry
    assert open(entry, "rb").read() == original
    Image.open(entry).load()


def test_a_resumed_run_and_its_evaluation_read_no_unchanged_source(scans, tmp_path):
    from retina.evaluation.held_out import evaluate_run
    from retina.training.loop import train

    def config(epochs):
        return smoke_config(tmp_path, [f"train.epochs={epochs}"], data_root=scans)

    run_dir = tmp_path / "run"
    train(config(1), run_dir)
    _garble_in_place([p for p in (scans / "train_images").iterdir()])
    train(config(2), run_dir)  # resumes; re-launching must not notice the garbled sources
    evaluate_run(run_dir, n_resamples=20)
    assert not (run_dir / "bad_inputs.csv").exists()
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == [1, 2]


def test_a_jpeg_cache_keeps_its_flags_when_the_index_is_lost(scans, tmp_path):
    """cache_format=jpeg (auto picks it from 384 px): the gradability flags travel in the
    JPEG comment, so a lost index costs a hash per scan, not a new preprocessing."""
    cfg, cache = PreprocessConfig(image_size=48, cache_format="jpeg"), tmp_path / "cache"
    manifest = _manifest(scans).head(4)
    first, _ = build_cache(manifest, scans, cfg, cache, workers=1)
    assert first["cache_path"].str.endswith(".jpg").all()
    written = {path: os.stat(path).st_mtime_ns for path in first["cache_path"]}
    next(cache.glob(f"*/{INDEX_FILE}")).unlink()
    again, problems = build_cache(manifest, scans, cfg, cache, workers=1)
    assert not problems
    pd.testing.assert_frame_equal(again, first)
    assert {path: os.stat(path).st_mtime_ns for path in again["cache_path"]} == written
