import json
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from snn4vision import cli, data, rundir
from snn4vision.errors import UserError

from .conftest import UCMERCED_TIFF


# ---------------------------------------------------------------- splits
def test_split_is_stratified_disjoint_and_complete():
    labels = np.repeat(np.arange(7), [100, 100, 50, 40, 20, 10, 30])
    parts = data.stratified_split(labels, (0.8, 0.1, 0.1), seed=3)
    everything = np.concatenate([parts[s] for s in data.SPLITS])
    assert sorted(everything.tolist()) == list(range(len(labels)))
    for label, n in zip(range(7), [100, 100, 50, 40, 20, 10, 30]):
        counts = [int(np.sum(labels[parts[s]] == label)) for s in data.SPLITS]
        assert counts[0] == round(0.8 * n)
        assert counts[0] + counts[1] == round(0.9 * n)
        assert sum(counts) == n


def test_split_depends_only_on_seed():
    labels = np.repeat(np.arange(5), 40)
    a = data.stratified_split(labels, seed=1)
    b = data.stratified_split(labels, seed=1)
    c = data.stratified_split(labels, seed=2)
    assert all(np.array_equal(a[s], b[s]) for s in data.SPLITS)
    assert not np.array_equal(a["test"], c["test"])


def test_split_rejects_bad_fractions():
    with pytest.raises(UserError, match="sum"):
        data.stratified_split([0, 1], (0.5, 0.5, 0.5))


def test_cross_validation_tests_every_image_exactly_once_stratified():
    sizes = [100, 23, 17, 5, 12]
    labels = np.repeat(np.arange(5), sizes)
    folds = [data.stratified_folds(labels, 5, i, (0.8, 0.1, 0.1), seed=3) for i in range(5)]
    tested = np.concatenate([f["test"] for f in folds])
    assert sorted(tested.tolist()) == list(range(len(labels)))  # each image in exactly one test split
    for f in folds:
        assert sorted(np.concatenate([f[s] for s in data.SPLITS]).tolist()) == list(range(len(labels)))
        for label, n in enumerate(sizes):
            test = int(np.sum(labels[f["test"]] == label))
            val = int(np.sum(labels[f["val"]] == label))
            assert test in (n // 5, -(-n // 5))  # the folds of a class differ by at most one image
            assert val == round((n - test) / 9)  # val : train = 0.1 : 0.8 of the rest
    again = data.stratified_folds(labels, 5, 2, seed=3)
    assert all(np.array_equal(again[s], folds[2][s]) for s in data.SPLITS)
    assert not np.array_equal(data.stratified_folds(labels, 5, 2, seed=4)["test"], folds[2]["test"])
    with pytest.raises(UserError, match="--fold must be one of 0 .. 4"):
        data.stratified_folds(labels, 5, 5)
    with pytest.raises(UserError, match="class 3 has 5 image.s., fewer than --folds 6"):
        data.stratified_folds(labels, 6, 0)


def test_a_fold_is_recorded_in_the_manifest_and_the_config(ucmerced, tmp_path):
    source = data.scan_folder(ucmerced)
    manifest = data.split_manifest(source, (0.8, 0.1, 0.1), seed=0, folds=5, fold=1)
    assert [len(manifest[s]) for s in data.SPLITS] == [1491, 189, 420] and manifest["fold"] == 1
    args = cli.train_ann_parser().parse_args(["--run", str(tmp_path / "r"), "--folds", "5", "--fold", "4"])
    config = cli.train_config(args)
    assert (config.folds, config.fold) == (5, 4)
    assert rundir.TrainConfig.from_json(config.to_json()).fold == 4
    config.fold = 5
    with pytest.raises(UserError, match="--fold must be one of 0 .. 4 with --folds 5"):
        config.validate()


def test_full_ucmerced_manifest_matches_reference_split(ucmerced):
    source = data.scan_folder(ucmerced)
    assert len(source.classes) == 21 and len(source.items) == 2100
    manifest = data.split_manifest(source, (0.8, 0.1, 0.1), seed=0)
    assert [len(manifest[s]) for s in data.SPLITS] == [1680, 210, 210]
    for item, label in manifest["test"]:
        assert item.split("/")[0] == source.classes[label]


# ---------------------------------------------------------------- decoding
def test_tiff_decoding_is_pixel_exact():
    tiffs = sorted(UCMERCED_TIFF.glob("*/*.tif"))
    assert len(tiffs) == 21
    for path in tiffs[:6]:
        ours = data.load_image_file(path)
        reference = np.asarray(Image.open(path).convert("RGB"))
        assert ours.dtype == np.uint8
        np.testing.assert_array_equal(ours, reference)


def test_tiff_and_jpeg_flow_through_the_same_graph(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    tif = sorted(UCMERCED_TIFF.glob("*/*.tif"))[0]
    (tmp_path / "a" / "x.tif").symlink_to(tif)
    Image.open(tif).convert("RGB").save(tmp_path / "b" / "y.png")
    source = data.scan_folder(tmp_path)
    images = [x for x, _ in data.decoded_dataset(source, np.arange(2), 256).as_numpy_iterator()]
    np.testing.assert_array_equal(images[0], images[1])  # PNG is lossless: same pixels as the TIFF


def test_all_real_images_load_and_odd_sizes_are_resized(ucmerced):
    odd = []
    for path in sorted(ucmerced.glob("*/*.jpg")):
        with Image.open(path) as image:
            if image.size != (256, 256):
                odd.append(path)
    assert len(odd) == 44
    assert data.load_image_file(odd[0], 48).shape == (48, 48, 3)
    source = data.scan_folder(ucmerced)
    decoded = data.decoded_dataset(source, np.arange(len(source.items)), 24)
    shapes = {x.shape for x, _ in decoded.as_numpy_iterator()}
    assert shapes == {(24, 24, 3)}


def test_resize_keeps_constant_images_constant():
    image = np.full((37, 53, 3), (10, 128, 250), np.uint8)
    out = data.resize_uint8(image, 16).numpy()
    assert out.shape == (16, 16, 3)
    assert np.all(out == np.array([10, 128, 250], np.uint8))


# ---------------------------------------------------------------- augmentation
def _seed(a, b):
    return tf.constant([a, b], tf.int64)


def test_geometric_augmentation_permutes_pixels():
    image = tf.random.stateless_uniform((32, 32, 3), (1, 2))
    geometric = data.Augmentation(zoom=None, pad_crop=None, brightness=None, contrast=None, hue=None,
                                  saturation=None)
    outputs = [geometric(image, _seed(0, s)).numpy() for s in range(8)]
    for out in outputs:
        np.testing.assert_array_equal(np.sort(out, axis=None), np.sort(image.numpy(), axis=None))
    assert len({out.tobytes() for out in outputs}) > 1


def test_full_augmentation_is_bounded_deterministic_and_seeded():
    image = tf.random.stateless_uniform((40, 40, 3), (3, 4))
    augment = data.Augmentation()
    a = augment(image, _seed(5, 6)).numpy()
    b = augment(image, _seed(5, 6)).numpy()
    c = augment(image, _seed(5, 7)).numpy()
    assert a.shape == (40, 40, 3)
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def _ramps(size):
    """Channel 0 is the column index / (size - 1), channel 1 the row index / (size - 1), channel 2 zero."""
    ramp = np.arange(size, dtype=np.float32) / (size - 1)
    return tf.constant(np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)),
                                 np.zeros((size, size), np.float32)], axis=-1))


def test_crops_keep_35_to_100_percent_of_the_image_and_vary_with_the_seed():
    # a ramp's value range after the crop is (extent - 1) / (size - 1) along its axis; flips and quarter turns
    # move the ramps but keep their ranges, so the ranges give the crop's area whatever the seed drew
    size = 64
    image = _ramps(size)
    crops = data.augmentation("crops")
    fractions = []
    for s in range(24):
        out = crops(image, _seed(s, 1)).numpy()
        assert out.shape == (size, size, 3)
        spans = [out[..., c].max() - out[..., c].min() for c in (0, 1)]
        extents = [span * (size - 1) + 1 for span in spans]
        assert 3 / 4 - 0.05 <= extents[0] / extents[1] <= 4 / 3 + 0.05
        fractions.append(extents[0] * extents[1] / size ** 2)
    assert min(fractions) >= 0.35 - 0.03 and max(fractions) <= 1.0
    assert min(fractions) < 0.6 and max(fractions) > 0.8  # the draws cover the range, not one size


def test_a_whole_image_crop_changes_nothing_else_the_seed_draws():
    # the crop draws from a seed of its own: adding it leaves the flips and turns (and so the geometric and
    # snn4space policies of earlier runs) exactly as they were
    image = tf.random.stateless_uniform((32, 32, 3), (1, 2))
    plain = dict(zoom=None, pad_crop=None, brightness=None, contrast=None, hue=None, saturation=None)
    whole = data.Augmentation(crop_area=(1.0, 1.0), **plain)
    without = data.Augmentation(**plain)
    for s in range(8):
        np.testing.assert_array_equal(whole(image, _seed(s, 3)).numpy(), without(image, _seed(s, 3)).numpy())


def test_training_batches_depend_on_seed_and_epoch(small_subset):
    source = data.scan_folder(small_subset)
    decoded = data.decoded_dataset(source, np.arange(len(source.items)), 16)

    def labels(seed, epoch):
        batches = data.training_batches(decoded, 8, seed, epoch, data.Augmentation())
        return np.concatenate([y for _, y in batches.as_numpy_iterator()])

    assert np.array_equal(labels(0, 1), labels(0, 1))
    assert not np.array_equal(labels(0, 1), labels(0, 2))
    assert sorted(labels(0, 1)) == sorted(source.labels)


# ---------------------------------------------------------------- bad input
def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        data.open_source(str(tmp_path / "nope"))


def test_folder_without_classes(tmp_path):
    with pytest.raises(UserError, match="no class sub-folders"):
        data.scan_folder(tmp_path)


def test_class_without_images(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"a holds no images"):
        data.scan_folder(tmp_path)


def test_unknown_dataset_name():
    with pytest.raises(UserError, match="unknown dataset 'imagenette'"):
        data.open_source("imagenette")


def test_corrupt_image_is_named(tmp_path, ucmerced):
    """A file no decoder recognises is named when the folder is scanned; one whose header reads but whose
    pixels do not (a PNG with a damaged IDAT) is named when tf.data fails on it."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "good.jpg").symlink_to(ucmerced / "beach" / "beach00.jpg")
    (tmp_path / "a" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(UserError, match=r"^cannot read image .*a/bad\.jpg \(.*\): replace or remove the file$"):
        data.scan_folder(tmp_path)
    (tmp_path / "a" / "bad.jpg").unlink()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "a" / "c.png")
    damaged = bytearray((tmp_path / "a" / "c.png").read_bytes())
    damaged[60:-20] = bytes(b ^ 0x5A for b in damaged[60:-20])  # the pixel data, not the header
    (tmp_path / "a" / "c.png").write_bytes(bytes(damaged))
    source = data.scan_folder(tmp_path)
    with pytest.raises(UserError, match=r"^cannot read image .*a/c\.png \(Invalid PNG data"):
        with data.explain_bad_images(source, np.arange(2)):
            list(data.decoded_dataset(source, np.arange(2), 16))


def test_tfds_dataset_not_on_disk_fails_fast_offline(tmp_path):
    if data.sources._can_reach(data.sources._DOWNLOAD_HOSTS["uc_merced"]):
        pytest.skip("online: tensorflow-datasets would download the data")
    began = time.perf_counter()
    with pytest.raises(UserError, match="--data-dir"):
        data.open_source("uc_merced", str(tmp_path))
    assert time.perf_counter() - began < 30


def test_tfds_name_with_local_copy_uses_the_folder(small_subset):
    source = data.open_source("uc_merced", str(small_subset))
    assert source.kind == "folder" and source.classes == ["beach", "chaparral", "forest", "runway"]


# ---------------------------------------------------------------- multi-band and odd files
def _four_band_tiff(path, rgb):
    """RGB plus a near-infrared band, 8 bits, as remote-sensing tools write it (4 samples, no alpha)."""
    import tifffile

    nir = (255 - rgb[..., :1]).astype(np.uint8)
    tifffile.imwrite(path, np.concatenate([rgb, nir], axis=-1), photometric="minisblack", planarconfig="contig")


def test_a_multiband_tiff_is_refused_naming_the_file_and_its_bands(tmp_path):
    """tensorflow-io would decode it as band 1 copied into R, G and B (measured): refused instead."""
    (tmp_path / "fields").mkdir()
    tif = sorted(UCMERCED_TIFF.glob("*/*.tif"))[0]
    (tmp_path / "fields" / "rgb.tif").symlink_to(tif)
    _four_band_tiff(tmp_path / "fields" / "rgbn.tif", np.asarray(Image.open(tif).convert("RGB")))
    with pytest.raises(UserError, match=r"1 TIFF\(s\) are not RGB: .*rgbn\.tif has 4 bands .*gdal_translate"):
        data.scan_folder(tmp_path)
    with pytest.raises(UserError, match=r"rgbn\.tif has 4 bands"):
        data.load_image_file(tmp_path / "fields" / "rgbn.tif")
    import tifffile

    tifffile.imwrite(tmp_path / "fields" / "rgbn.tif", np.zeros((8, 8), np.uint8), photometric="minisblack")
    with pytest.raises(UserError, match=r"rgbn\.tif has 1 band "):
        data.scan_folder(tmp_path)


def test_an_rgb_tiff_with_alpha_keeps_its_colours_where_opaque(tmp_path):
    import tifffile

    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    alpha = np.full((16, 16, 1), 255, np.uint8)
    alpha[0, 0] = 0
    tifffile.imwrite(tmp_path / "a.tif", np.concatenate([rgb, alpha], -1), photometric="rgb",
                     extrasamples=["unassalpha"])
    image = data.load_image_file(tmp_path / "a.tif")
    np.testing.assert_array_equal(image[1:], rgb[1:])
    np.testing.assert_array_equal(image[0, 0], [0, 0, 0])  # transparent: black


def test_tiny_images_and_dangling_links_are_named_once(tmp_path, ucmerced, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "good.jpg").symlink_to(ucmerced / "beach" / "beach00.jpg")
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "a" / "dot.png")
    Image.new("RGB", (40, 12)).save(tmp_path / "a" / "strip.png")
    (tmp_path / "a" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    source = data.scan_folder(tmp_path)
    assert source.items == ["a/dot.png", "a/good.jpg", "a/strip.png"]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("warning: 1 image link(s)") and "gone.jpg" in lines[0]
    assert lines[1].startswith("warning: 2 image(s) have a side shorter than 32 pixels")
    assert "dot.png (1 px)" in lines[1] and "strip.png (12 px)" in lines[1]


def test_image_errors_are_one_plain_line(tmp_path, capfd):
    """No TensorFlow {{function_node ...}} / [Op:...] decorations, and no decoder's own stderr lines."""
    (tmp_path / "notes.jpg").write_text("hello")
    with pytest.raises(UserError) as caught:
        data.load_image_file(tmp_path / "notes.jpg")
    assert str(caught.value) == (f"cannot read image {tmp_path / 'notes.jpg'} (cannot identify image file): "
                                 "replace or remove the file")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "c.png")
    damaged = bytearray((tmp_path / "c.png").read_bytes())
    damaged[45:-20] = bytes(b ^ 0x5A for b in damaged[45:-20])
    (tmp_path / "c.png").write_bytes(bytes(damaged))
    with pytest.raises(UserError) as caught:
        data.load_image_file(tmp_path / "c.png")
    assert str(caught.value).startswith(f"cannot read image {tmp_path / 'c.png'} (Invalid PNG data, size ")
    assert str(caught.value).endswith("): replace or remove the file") and "{" not in str(caught.value)
    assert "[Op:" not in str(caught.value) and "name:" not in str(caught.value)
    assert capfd.readouterr().err == ""


# ---------------------------------------------------------------- TFDS, prepared offline
@pytest.fixture(scope="module")
def prepared_uc_merced(tmp_path_factory, ucmerced):
    """A TFDS ``uc_merced`` data folder prepared offline with 10 real images of 2 classes: (data_dir, images)."""
    import tensorflow_datasets as tfds

    data_dir = tmp_path_factory.mktemp("tfds")
    builder = tfds.builder("uc_merced", data_dir=str(data_dir), try_gcs=False)
    features = builder.info.features
    version_dir = Path(builder.data_dir)
    version_dir.mkdir(parents=True)
    images = []
    with tf.io.TFRecordWriter(str(version_dir / "uc_merced-train.tfrecord-00000-of-00001")) as writer:
        for name in ("beach", "forest"):
            for path in sorted((ucmerced / name).iterdir())[:10]:
                pixels = np.asarray(Image.open(path).convert("RGB"))
                images.append((pixels, features["label"].names.index(name)))
                writer.write(features.serialize_example({"image": pixels, "label": images[-1][1],
                                                         "filename": path.name}))
    tfds.folder_dataset.write_metadata(data_dir=str(version_dir), features=features,
                                       filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
    return data_dir, images


def test_a_prepared_tfds_dataset_is_read_without_network(prepared_uc_merced):
    data_dir, images = prepared_uc_merced
    source = data.open_source("uc_merced", str(data_dir))
    assert source.kind == "tfds" and len(source.classes) == 21
    np.testing.assert_array_equal(source.labels, [label for _, label in images])
    decoded = [x for x, _ in data.decoded_dataset(source, np.array([0, 13]), 32).as_numpy_iterator()]
    for got, (pixels, _) in zip(decoded, [images[0], images[13]]):
        np.testing.assert_array_equal(got, data.resize_uint8(pixels, 32).numpy())


@pytest.mark.slow  # a training and a conversion: about 13 s
def test_train_and_convert_on_a_prepared_tfds_dataset(prepared_uc_merced, tmp_path):
    from snn4vision import cli
    from snn4vision.stages.convert import ConvertConfig, convert_snn
    from snn4vision.stages.training import train_ann

    data_dir, images = prepared_uc_merced
    args = cli.train_ann_parser().parse_args(["--run", str(tmp_path / "run"), "--dataset", "uc_merced", "--data-dir",
                                              str(data_dir), "--image-size", "32", "--width", "0.125", "--epochs",
                                              "1", "--batch-size", "8"])
    metrics = train_ann(cli.train_config(args), verbose=False)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["source"]["kind"] == "tfds" and len(split["train"]) == 16 and len(split["test"]) == 2
    assert metrics["test"]["accuracy"] in (0.0, 0.5, 1.0)  # two test images
    report = convert_snn(ConvertConfig(str(tmp_path / "run"), max_timesteps=2, sweep=False), verbose=False)
    assert report["test_images"] == 2
