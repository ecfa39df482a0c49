import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from retina.data.augment import random_flips
from retina.data.pipeline import make_eval_dataset, make_train_dataset


@pytest.fixture(scope="module")
def cached_pngs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    paths = []
    for index in range(10):
        image = np.full((8, 8, 3), index * 20, np.uint8)
        image[0, 0] = 255  # a corner marker: flips move it
        path = folder / f"{index}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths, list(range(10))


def _batches(iterator, count):
    return [next(iterator)[1].numpy().tolist() for _ in range(count)]


def test_each_epoch_is_a_reshuffled_pass_over_all_scans(cached_pngs):
    paths, labels = cached_pngs
    iterator = iter(make_train_dataset(paths, labels, batch_size=5, seed=0))
    epoch1 = sum(_batches(iterator, 2), [])
    epoch2 = sum(_batches(iterator, 2), [])
    assert sorted(epoch1) == sorted(epoch2) == labels
    assert epoch1 != epoch2


def test_iterator_checkpoint_resumes_mid_epoch(cached_pngs, tmp_path):
    paths, labels = cached_pngs
    iterator = iter(make_train_dataset(paths, labels, batch_size=3, seed=5))
    _batches(iterator, 2)
    prefix = tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / "it"))
    expected = [next(iterator) for _ in range(4)]
    fresh = iter(make_train_dataset(paths, labels, batch_size=3, seed=5))
    tf.train.Checkpoint(iterator=fresh).read(prefix).assert_consumed()
    for images, grades in expected:
        again_images, again_grades = next(fresh)
        np.testing.assert_array_equal(again_grades, grades)
        np.testing.assert_array_equal(again_images, images)


def test_flips_are_seeded_and_the_same_eagerly_and_in_tf_data(cached_pngs):
    image = tf.io.decode_png(tf.io.read_file(cached_pngs[0][3]))
    seeds = [tf.constant([0, i], tf.int64) for i in range(16)]
    eager = [random_flips(image, s).numpy() for s in seeds]
    graph = list(
        tf.data.Dataset.from_tensor_slices(tf.stack(seeds))
        .map(lambda s: random_flips(image, s))
        .as_numpy_iterator()
    )
    for a, b in zip(eager, graph, strict=True):
        np.testing.assert_array_equal(a, b)
    corners = {tuple(np.argwhere(e[..., 0] == 255)[0]) for e in eager}
    assert len(corners) > 1, "some seeds flip the image"


def test_eval_dataset_is_ordered_and_complete(cached_pngs):
    paths, labels = cached_pngs
    seen = [y for _, batch in make_eval_dataset(paths, labels, 4) for y in batch.numpy()]
    assert seen == labels
