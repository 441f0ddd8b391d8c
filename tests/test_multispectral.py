"""Multispectral inputs (issue 31): multi-band GeoTIFFs read pixel-exact, --bands, per-band statistics of the
training split, C-channel models, edge filters per band, NIR export of a C-channel network, eurosat_all through
TFDS prepared offline, and the bad inputs refused in one line before anything is written."""
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tifffile

from snn4vision import bands, cli, data, edges, layer_graph, models, rundir
from snn4vision.errors import UserError
from snn4vision.rundir import RunData, TrainConfig

#: Sentinel-2 names as a GeoTIFF of EuroSAT's 13 bands describes them.
NAMES = bands.EUROSAT_BANDS


def write_geotiff(path, array, names=None, planar=False):
    """``array`` (h, w, bands) as a GeoTIFF: GeoKey directory, pixel scale and tie point (WGS 84), and GDAL's
    band descriptions when ``names`` are given; pixel- or band-interleaved."""
    geokeys = [1, 1, 0, 3, 1024, 0, 1, 2, 1025, 0, 1, 1, 2048, 0, 1, 4326]
    extratags = [(34735, "H", len(geokeys), geokeys, True), (33550, "d", 3, (1e-4, 1e-4, 0.0), True),
                 (33922, "d", 6, (0.0, 0.0, 0.0, 7.0, 45.0, 0.0), True)]
    if names:
        items = "".join(f'<Item name="DESCRIPTION" sample="{i}" role="description">{n}</Item>'
                        for i, n in enumerate(names))
        extratags.append((42112, "s", 0, f"<GDALMetadata>{items}</GDALMetadata>", True))
    data_ = np.moveaxis(array, -1, 0) if planar else array
    tifffile.imwrite(path, data_, photometric="minisblack", planarconfig="separate" if planar else "contig",
                     extratags=extratags)


def band_folder(root, per_class=6, size=16, dtype=np.uint16, names=NAMES, seed=0, shift=None):
    """Two classes of 13-band GeoTIFFs; ``shift(class, index)``: a value added to every sample of an image."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for c, name in enumerate(("bare", "crops")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = rng.normal(1000 + 100 * np.arange(13), 50 + 10 * np.arange(13), (size, size, 13))
            if shift is not None:
                array = array + shift(c, i)
            array = np.clip(array, 0, 60000).astype(dtype)
            write_geotiff(root / name / f"{name}{i}.tif", array, names)
            arrays[f"{name}/{name}{i}.tif"] = array
    return arrays


def _config(tmp_path, dataset, **overrides):
    settings = dict(dataset=str(dataset), image_size=16, width=0.125, epochs=1, batch_size=4, split=(0.5, 0.25, 0.25),
                    augment="none")
    return TrainConfig(run_dir=str(tmp_path / "run"), **{**settings, **overrides})


def _run_data(config):
    source = data.open_source(config.dataset, config.data_dir)
    manifest = data.split_manifest(source, config.split, config.seed)
    return RunData(config, source, source.classes, manifest)


# ---------------------------------------------------------------- reading
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("planar", [False, True])
def test_geotiffs_round_trip_pixel_exact(tmp_path, dtype, planar):
    rng = np.random.default_rng(1)
    if dtype == np.uint16:
        array = rng.integers(0, 65536, (19, 23, 13), dtype=np.uint16)  # the whole range, odd sides
    else:
        array = (rng.normal(0, 1, (19, 23, 13)) * 10.0 ** rng.integers(-30, 30, (19, 23, 13))).astype(np.float32)
    write_geotiff(tmp_path / "a.tif", array, NAMES, planar=planar)
    got = bands.read_tiff(tmp_path / "a.tif")
    assert got.dtype == array.dtype and got.shape == (19, 23, 13)
    np.testing.assert_array_equal(got, array)
    info = bands.tiff_info(tmp_path / "a.tif")
    assert (info.bands, info.dtype, info.names, info.shape) == (13, np.dtype(dtype).name, NAMES, (19, 23))
    # the float32 samples every later stage starts from are the written values, exactly
    np.testing.assert_array_equal(bands.read_bands(tmp_path / "a.tif", bands.Layout(13, info.dtype), [7, 3]),
                                  array[..., [7, 3]].astype(np.float32))
    assert tifffile.TiffFile(tmp_path / "a.tif").pages[0].is_geotiff


def test_a_folder_of_multiband_tiffs_is_a_multiband_source_and_rgb_stays_rgb(tmp_path, small_subset):
    band_folder(tmp_path / "ms")
    source = data.scan_folder(tmp_path / "ms")
    assert source.layout == bands.Layout(13, "uint16", NAMES)
    assert source.describe()["bands"].startswith("13 bands of uint16: B01, B02")
    rgb = data.scan_folder(small_subset)
    assert rgb.layout is None and "bands" not in rgb.describe()  # RGB sources unchanged


# ---------------------------------------------------------------- --bands
def test_bands_are_selected_by_number_or_name_in_the_order_given():
    layout = bands.Layout(13, "uint16", NAMES)
    assert bands.resolve(None, layout, "x") == list(range(13))
    assert bands.resolve("all", layout, "x") == list(range(13))
    assert bands.resolve("4,3,2,8", layout, "x") == [3, 2, 1, 7]
    assert bands.resolve("B8A,B04", layout, "x") == [12, 3]
    assert bands.resolve("b8a, 1", layout, "x") == [12, 0]
    with pytest.raises(UserError, match=r"^--bands 14: x has 13 band\(s\), numbered 1 to 13 \(B01, .*B8A\); band 14"):
        bands.resolve("14", layout, "x")
    with pytest.raises(UserError, match="no band named B13; its bands are B01, B02"):
        bands.resolve("B13", layout, "x")
    with pytest.raises(UserError, match="do not name their bands: select them by number, 1 to 4"):
        bands.resolve("NIR", bands.Layout(4, "uint8"), "x")
    with pytest.raises(UserError, match="numbered from 1"):
        bands.parse_selection("0,1")
    with pytest.raises(UserError, match="names band 3 twice"):
        bands.parse_selection("3,3")
    with pytest.raises(UserError, match="selects one band twice"):
        bands.resolve("4,B04", layout, "x")


def test_band_statistics_are_hand_computable_and_recorded(tmp_path):
    arrays = band_folder(tmp_path / "ms", per_class=8)
    config = _config(tmp_path, tmp_path / "ms", bands="B08,2,B04", seed=3)
    run = _run_data(config)
    train = [item for item, _ in run.manifest["train"]]
    pixels = np.concatenate([arrays[item][..., [7, 1, 3]].reshape(-1, 3).astype(np.float64) for item in train])
    stats = config.band_stats
    assert stats["numbers"] == [8, 2, 4] and stats["names"] == ["B08", "B02", "B04"] and stats["images"] == len(train)
    np.testing.assert_allclose(stats["mean"], pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], pixels.std(axis=0), rtol=1e-9)
    assert config.channels == 3 and config.bands == "B08,2,B04"
    again = TrainConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert again.band_stats == stats and again.channels == 3
    reopened = RunData(again, data.open_source(again.dataset), run.classes, run.manifest)  # later stages
    assert reopened.source.plan == run.source.plan


def test_train_statistics_differ_from_all_images_statistics(tmp_path):
    """A deterministic version of the check above: every train image is unshifted, every other shifted."""
    arrays = band_folder(tmp_path / "ms", per_class=8)
    config = _config(tmp_path, tmp_path / "ms", bands="1")
    source = data.open_source(config.dataset)
    manifest = data.split_manifest(source, config.split, config.seed)
    train = {item for item, _ in manifest["train"]}
    for item, array in arrays.items():  # rewrite val and test images 5000 higher
        if item not in train:
            write_geotiff(tmp_path / "ms" / item, array + 5000, NAMES)
    RunData(config, source, source.classes, manifest)
    pixels = np.concatenate([arrays[item][..., 0].ravel().astype(np.float64) for item in sorted(train)])
    assert config.band_stats["mean"][0] == pytest.approx(pixels.mean(), rel=1e-12)
    assert config.band_stats["std"][0] == pytest.approx(pixels.std(), rel=1e-9)


def test_every_stage_sees_the_normalised_selected_bands(tmp_path):
    """Decoded images and predict's inputs are 0.5 + (x - mean) / (6 std), clipped, as float16, band by band in
    the --bands order (at the images' own size, where resizing is the identity)."""
    arrays = band_folder(tmp_path / "ms", per_class=4)
    config = _config(tmp_path, tmp_path / "ms", bands="B12,3")
    run = _run_data(config)
    mean, std = np.asarray(config.band_stats["mean"]), np.asarray(config.band_stats["std"])
    items = [item for item, _ in run.manifest["test"]]
    decoded = [x for x, _ in run.decoded("test").as_numpy_iterator()]
    for item, got in zip(items, decoded):
        raw = arrays[item][..., [11, 2]].astype(np.float64)
        expected = np.clip(0.5 + (raw - mean) / (6 * std), 0, 1).astype(np.float16)
        assert got.dtype == np.float16 and got.shape == (16, 16, 2)
        np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), atol=1e-3)
        predicted = bands.load_file(tmp_path / "ms" / item, run.source.plan, 16)
        np.testing.assert_array_equal(predicted, got.astype(np.float32))  # predict = evaluation
    batch = next(iter(run.batches("test", 8)))[0].numpy()
    assert batch.dtype == np.float32 and batch.shape[-1] == 2
    np.testing.assert_array_equal(batch, np.stack(decoded).astype(np.float32))


def test_a_config_json_without_bands_still_loads_as_rgb():
    old = TrainConfig(run_dir="r").to_json()
    del old["bands"], old["band_stats"]
    config = TrainConfig.from_json(old)
    assert config.bands is None and config.band_stats == {} and config.channels == 3
    args = cli.train_ann_parser().parse_args(["--run", "r", "--bands", "B04,B03,B02,B08"])
    assert cli.train_config(args).bands == "B04,B03,B02,B08"
    assert cli.train_config(cli.train_ann_parser().parse_args(["--run", "r"])).bands is None


# ---------------------------------------------------------------- models, edges, NIR
@pytest.mark.parametrize("build", [
    lambda: models.vgg16(3, image_size=16, width=0.125, channels=13),
    lambda: models.resnet("resnet18", 3, image_size=16, width=0.125, channels=13),
    lambda: models.resnet("resnet20", 3, image_size=16, width=0.25, channels=13),
    lambda: models.spikformer(3, depth=1, dim=16, heads=2, timesteps=1, image_size=16, channels=13),
    lambda: models.spike_driven_transformer(3, depth=1, dim=16, heads=2, timesteps=1, image_size=16, channels=13),
])
def test_the_first_convolution_takes_every_band(build):
    model = build()
    first = next(w for w in model.weights if len(w.shape) == 4)
    assert tuple(first.shape[:3]) == (3, 3, 13)
    assert model(tf.zeros((2, 16, 16, 13))).shape == (2, 3)


def test_imagenet_weights_need_three_bands():
    with pytest.raises(UserError, match="--weights imagenet holds RGB filters, but the run's images have 13 band"):
        models.vgg16(3, image_size=16, weights="imagenet", channels=13)


def test_build_model_follows_the_recorded_bands():
    config = TrainConfig(run_dir="r", image_size=16, width=0.125, band_stats=bands.Plan(
        bands.Layout(13, "uint16"), [7, 3, 2], [0.0] * 3, [1.0] * 3).to_json())
    assert rundir.build_model(config, 2).input_shape == (None, 16, 16, 3)
    config.band_stats = bands.Plan(bands.Layout(13, "uint16"), list(range(13)), [0.0] * 13, [1.0] * 13).to_json()
    assert rundir.build_model(config, 2).input_shape == (None, 16, 16, 13)


@pytest.mark.parametrize("name", ["prewitt", "sobel_sq_mask"])
def test_edge_filters_work_band_by_band(name):
    images = np.random.default_rng(2).random((2, 12, 12, 13)).astype(np.float32)
    transform = edges.parse(name)
    together = transform(images).numpy()
    assert together.shape == images.shape
    for band in range(13):
        alone = transform(images[..., band:band + 1]).numpy()
        np.testing.assert_array_equal(together[..., band:band + 1], alone)


def test_a_13_band_network_exports_to_nir_and_runs_to_our_spikes(tmp_path):
    import nir

    from snn4vision.nir_io import to_nir, write_nir
    from snn4vision.simulation import SpikingNetwork

    from .test_nir_io import _dyadic, _with_thresholds, run_nir

    model = _with_thresholds(models.vgg16(4, image_size=16, width=0.125, seed=2, activation="qcfs", levels=4,
                                          channels=13))
    snn = SpikingNetwork.from_graph(_dyadic(layer_graph.build_graph(model)), timesteps=8, tau=None, neuron="if")
    write_nir(tmp_path / "snn.nir", to_nir(snn))
    graph = nir.read(tmp_path / "snn.nir")
    assert tuple(graph.nodes["input"].input_type["input"]) == (13, 16, 16)
    first = next(n for n in graph.nodes.values() if isinstance(n, nir.Conv2d))
    assert first.weight.shape[1] == 13
    images = np.round(np.random.default_rng(3).random((3, 16, 16, 13)) * 16).astype(np.float32) / 16
    _, spikes = run_nir(graph, images, 8)
    ours = snn.simulate(images, 8)
    assert sum(s.sum() > 0 for s in spikes.values()) >= 4
    np.testing.assert_array_equal(np.stack([spikes[n.name] for n in snn.neuron_nodes], axis=1),
                                  ours["spikes"].numpy().sum(axis=1))


# ---------------------------------------------------------------- bad inputs: one line, nothing written
def _train_refused(config, match):
    from snn4vision.stages.training import train_ann

    with pytest.raises(UserError, match=match) as caught:
        train_ann(config, verbose=False)
    assert "\n" not in str(caught.value)
    assert not Path(config.run_dir).exists()  # no run directory left, half written or empty
    return str(caught.value)


def test_a_file_with_other_bands_is_refused_naming_it(tmp_path):
    band_folder(tmp_path / "ms", per_class=4)
    write_geotiff(tmp_path / "ms" / "crops" / "odd.tif", np.zeros((16, 16, 12), np.uint16))
    message = _train_refused(_config(tmp_path, tmp_path / "ms"),
                             r"^1 image\(s\) of .* have other bands than the rest: .*crops/odd\.tif has 12 bands "
                             r"\(uint16\), where .*bare0\.tif and 7 other\(s\) have 13 bands of uint16")
    assert message.endswith("replace or remove it")
    (tmp_path / "ms" / "crops" / "odd.tif").unlink()
    write_geotiff(tmp_path / "ms" / "crops" / "odd.tif", np.zeros((16, 16, 13), np.uint8))
    _train_refused(_config(tmp_path, tmp_path / "ms"), r"odd\.tif has 13 bands, where")


def test_a_band_number_out_of_range_is_refused_before_anything_is_written(tmp_path):
    band_folder(tmp_path / "ms", per_class=4)
    _train_refused(_config(tmp_path, tmp_path / "ms", bands="4,3,2,14"),
                   r"^--bands 4,3,2,14: .*ms has 13 band\(s\), numbered 1 to 13 \(B01, .*\); band 14 is not one")


def test_nan_samples_of_a_float_tiff_are_refused_naming_the_file(tmp_path):
    band_folder(tmp_path / "ms", per_class=4, dtype=np.float32)
    array = bands.read_tiff(tmp_path / "ms" / "crops" / "crops3.tif").copy()
    array[2, 5, 9] = np.nan
    array[3, 3, 0] = np.nan
    write_geotiff(tmp_path / "ms" / "crops" / "crops3.tif", array, NAMES)
    _train_refused(_config(tmp_path, tmp_path / "ms"),
                   r"^image .*crops/crops3\.tif has 2 NaN or infinite sample\(s\) \(no-data pixels\?\): fill them")


def huge_tiff_header(path, side=20000, bands_=13):
    """A 1 KiB TIFF whose tags declare ``side`` x ``side`` pixels of ``bands_`` uint16 bands."""
    tifffile.imwrite(path, np.zeros((4, 4, bands_), np.uint16), photometric="minisblack", planarconfig="contig")
    with tifffile.TiffFile(path) as tiff:
        tags = tiff.pages[0].tags
        spots = [(tags[name].valueoffset, tags[name].dtype) for name in ("ImageWidth", "ImageLength")]
    raw = bytearray(Path(path).read_bytes())
    for offset, dtype in spots:
        raw[offset:offset + (2 if int(dtype) == 3 else 4)] = struct.pack("<H" if int(dtype) == 3 else "<I", side)
    Path(path).write_bytes(bytes(raw))


def test_a_20000_pixel_tiff_is_refused_from_its_header(tmp_path):
    band_folder(tmp_path / "ms", per_class=4)
    huge_tiff_header(tmp_path / "ms" / "bare" / "huge.tif")
    assert bands.tiff_info(tmp_path / "ms" / "bare" / "huge.tif").shape == (20000, 20000)
    _train_refused(_config(tmp_path, tmp_path / "ms"),
                   r"^1 image\(s\) are too large to decode: .*huge\.tif is 20000x20000 pixels")
    # 4096 x 4096 is below the RGB bound of 8192 x 8192 pixels, but 13 uint16 bands, their float32 copy and its
    # resized copy take 2.0 GiB
    huge_tiff_header(tmp_path / "ms" / "bare" / "huge.tif", side=4096)
    _train_refused(_config(tmp_path, tmp_path / "ms"),
                   r"^1 image\(s\) are too large to decode: .*huge\.tif is 4096x4096 pixels of 13 bands \(decoding "
                   r"it takes about 2\.0 GiB of memory; at most 1\.0 GiB are decoded\)")


def test_predict_refuses_files_with_other_bands_in_one_line(tmp_path):
    band_folder(tmp_path / "ms", per_class=4)
    run = _run_data(_config(tmp_path, tmp_path / "ms", bands="B08"))
    write_geotiff(tmp_path / "rgb.tif", np.zeros((16, 16, 3), np.uint16))
    with pytest.raises(UserError, match=r"rgb\.tif has 3 bands of uint16, but the run's images have 13 bands"):
        bands.load_file(tmp_path / "rgb.tif", run.source.plan, 16)
    with pytest.raises(UserError, match="is not a TIFF, but the run was trained on multi-band TIFFs"):
        (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
        bands.load_file(tmp_path / "photo.jpg", run.source.plan, 16)
    huge_tiff_header(tmp_path / "huge.tif")
    with pytest.raises(UserError, match=r"huge\.tif is 20000x20000 pixels of 13 bands"):
        bands.load_file(tmp_path / "huge.tif", run.source.plan, 16)


def test_bands_on_rgb_images_and_lzw_without_imagecodecs_are_one_line(tmp_path, small_subset):
    config = _config(tmp_path, small_subset, bands="1,2")
    with pytest.raises(UserError, match="--bands selects bands of multi-band images, but .* holds RGB images"):
        _run_data(config)
    (tmp_path / "a").mkdir()
    tifffile.imwrite(tmp_path / "a" / "x.tif", np.zeros((8, 8, 5), np.uint16), photometric="minisblack",
                     planarconfig="contig")
    with tifffile.TiffFile(tmp_path / "a" / "x.tif") as tiff:
        offset = tiff.pages[0].tags["Compression"].valueoffset
    raw = bytearray((tmp_path / "a" / "x.tif").read_bytes())
    raw[offset:offset + 2] = struct.pack("<H", 5)  # declared LZW (tifffile writes LZW only with imagecodecs)
    (tmp_path / "a" / "x.tif").write_bytes(bytes(raw))
    try:
        import imagecodecs  # noqa: F401
        pytest.skip("imagecodecs is installed: LZW is read")
    except ImportError:
        pass
    with pytest.raises(UserError, match=r"x\.tif is LZW-compressed, which needs the imagecodecs package"):
        data.scan_folder(tmp_path)


# ---------------------------------------------------------------- eurosat_all through TFDS, prepared offline
@pytest.fixture(scope="module")
def prepared_eurosat_all(tmp_path_factory):
    """A TFDS ``eurosat/all`` data folder prepared offline: 10 images of 2 classes whose B08 differ."""
    import tensorflow_datasets as tfds

    data_dir = tmp_path_factory.mktemp("tfds")
    builder = tfds.builder("eurosat/all", data_dir=str(data_dir), try_gcs=False)
    features = builder.info.features
    version_dir = Path(builder.data_dir)
    version_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    with tf.io.TFRecordWriter(str(version_dir / "eurosat-train.tfrecord-00000-of-00001")) as writer:
        for name in ("Forest", "Industrial"):
            for i in range(10):
                array = rng.normal(1500, 200, (64, 64, 13)).astype(np.float32)
                array[..., 7] += 2000 * (name == "Forest")
                images.append((array, features["label"].names.index(name)))
                writer.write(features.serialize_example({"sentinel2": array, "label": images[-1][1],
                                                         "filename": f"{name}_{i}.tif"}))
    tfds.folder_dataset.write_metadata(data_dir=str(version_dir), features=features,
                                       filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
    return data_dir, images


def test_eurosat_all_is_read_from_a_prepared_tfds_folder(prepared_eurosat_all, tmp_path):
    data_dir, images = prepared_eurosat_all
    source = data.open_source("eurosat_all", str(data_dir))
    assert source.kind == "tfds" and source.layout == bands.Layout(13, "float32", NAMES)
    np.testing.assert_array_equal(source.labels, [label for _, label in images])
    config = TrainConfig(run_dir=str(tmp_path / "r"), dataset="eurosat_all", data_dir=str(data_dir), image_size=32,
                         bands="B04,B03,B02,B08", split=(0.5, 0.25, 0.25))
    manifest = data.split_manifest(source, config.split, 0)
    run = RunData(config, source, source.classes, manifest)
    train = run.indices("train")
    pixels = np.concatenate([images[i][0][..., [3, 2, 1, 7]].reshape(-1, 4).astype(np.float64) for i in train])
    np.testing.assert_allclose(config.band_stats["mean"], pixels.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(config.band_stats["std"], pixels.std(axis=0), rtol=1e-7)
    first = next(run.decoded("test").as_numpy_iterator())[0]
    assert first.shape == (32, 32, 4) and first.dtype == np.float16


def test_eurosat_all_not_prepared_offline_is_one_line(tmp_path):
    if data.sources._can_reach(data.sources._DOWNLOAD_HOSTS["eurosat_all"]):
        pytest.skip("online: the dataset would be downloaded")
    with pytest.raises(UserError, match=r"^dataset eurosat_all is not prepared in .* and cannot be downloaded"):
        data.open_source("eurosat_all", str(tmp_path))


def test_augmentation_keeps_every_band():
    """Geometry moves all bands alike; colour jitter of hue and saturation is RGB-only and left out."""
    image = tf.constant(np.random.default_rng(4).random((16, 16, 13)).astype(np.float32))
    seed = tf.constant([1, 2], tf.int64)
    for policy in ("geometric", "snn4space"):
        out = data.augmentation(policy)(image, seed).numpy()
        assert out.shape == (16, 16, 13) and 0 <= out.min() and out.max() <= 1
    flip = data.Augmentation(zoom=None, pad_crop=None, flips=True, rotations=True, brightness=None, contrast=None,
                             hue=None, saturation=None)
    out = flip(image, seed).numpy()
    moved = [np.flatnonzero([np.array_equal(out[..., b], np.rot90(f, k)) for f in (image.numpy()[..., b],
                             image.numpy()[::-1, :, b], image.numpy()[:, ::-1, b], image.numpy()[::-1, ::-1, b])
                             for k in range(4)]) for b in range(13)]
    assert all(len(m) and m[0] == moved[0][0] for m in moved)  # one and the same move for every band
