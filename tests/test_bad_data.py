"""Issue 33: odd data and training flags get one line (decompression bombs, huge images, TIFFs under another
name, hidden folders, symlink loops, unusable splits and seeds, batches that would not fit in memory)."""
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from snn4vision import data, resources
from snn4vision.stages import training
from snn4vision.errors import UserError
from snn4vision.rundir import TrainConfig

from .conftest import UCMERCED_TIFF, make_subset


def _png_header(path, width: int, height: int) -> None:
    """A tiny PNG that declares ``width`` x ``height`` RGB pixels (its pixel data is short: only the header counts)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


@pytest.fixture
def folder(tmp_path, ucmerced):
    """Two real classes of 3 images each: odd entries are added beside them."""
    return make_subset(tmp_path / "ds", ["beach", "forest"], 3)


# ---------------------------------------------------------------- images refused from their headers
def test_a_decompression_bomb_is_one_line_naming_the_file(folder):
    _png_header(folder / "beach" / "bomb.png", 60000, 60000)
    assert (folder / "beach" / "bomb.png").stat().st_size < 200
    expected = (rf"^image {folder / 'beach' / 'bomb.png'} declares 3,600,000,000 pixels \(a damaged file or a "
                r"decompression bomb; at most 67,108,864 are decoded\): replace or remove the file$")
    with pytest.raises(UserError, match=expected):
        data.scan_folder(folder)
    with pytest.raises(UserError, match=expected):
        data.load_image_file(folder / "beach" / "bomb.png")


def test_images_above_the_pixel_bound_are_refused_before_decoding(folder, capsys):
    """12000 x 12000 is below PIL's own bomb limit (179 Mpx) but would take about 2 GiB per image to decode."""
    _png_header(folder / "forest" / "edge.png", 8192, 8192)  # exactly the bound: accepted (only the header is read)
    data.scan_folder(folder)
    _png_header(folder / "beach" / "big.png", 12000, 12000)
    with pytest.raises(UserError) as caught:
        data.scan_folder(folder)
    assert str(caught.value).startswith(f"1 image(s) are too large to decode: {folder / 'beach' / 'big.png'} is "
                                        "12000x12000 pixels (decoding it takes about 2.1 GiB of memory; ")
    _png_header(folder / "beach" / "big.png", 8193, 8192)  # one row above the bound
    with pytest.raises(UserError, match=r"big\.png is 8193x8192 pixels"):
        data.scan_folder(folder)
    assert "DecompressionBombWarning" not in capsys.readouterr().err


def test_the_format_is_told_by_content_not_by_name(folder):
    """The decoder goes by magic bytes, so the band check must too: a 4-band TIFF named .png is refused, an RGB
    TIFF named .png and a JPEG named .tif are read as what they are."""
    tif = sorted(UCMERCED_TIFF.glob("*/*.tif"))[0]
    rgb = np.asarray(Image.open(tif).convert("RGB"))
    tifffile.imwrite(folder / "beach" / "rgbn.png", np.concatenate([rgb, 255 - rgb[..., :1]], -1),
                     photometric="minisblack", planarconfig="contig")
    with pytest.raises(UserError, match=r"^1 TIFF\(s\) are not RGB: .*beach/rgbn\.png has 4 bands \(a TIFF named "
                                        r"\.png\) "):
        data.scan_folder(folder)
    (folder / "beach" / "rgbn.png").unlink()
    (folder / "beach" / "rgb.png").symlink_to(tif)
    jpeg = sorted((folder / "forest").iterdir())[0].resolve()
    (folder / "forest" / "photo.tif").symlink_to(jpeg)
    data.scan_folder(folder)
    np.testing.assert_array_equal(data.load_image_file(folder / "beach" / "rgb.png"), rgb)
    np.testing.assert_array_equal(data.load_image_file(folder / "forest" / "photo.tif"), data.load_image_file(jpeg))


# ---------------------------------------------------------------- folders
def test_hidden_folders_are_left_out_in_one_warning(folder, capsys):
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / "beach00.jpg").symlink_to(sorted((folder / "beach").iterdir())[0].resolve())
    (folder / ".git").mkdir()
    source = data.scan_folder(folder)
    assert source.classes == ["beach", "forest"] and len(source.items) == 6
    assert capsys.readouterr().err.splitlines() == [
        f"warning: 2 hidden folder(s) in {folder} are not used as classes (.git, .ipynb_checkpoints): rename any "
        "that is a class so that its name does not start with a dot"]


@pytest.mark.parametrize("links", [["loop"], ["beach/loop.jpg"], ["forest/a.jpg", "forest/b.jpg"]])
def test_symlink_loops_are_named(folder, links):
    """A loop of one link (a -> a) or of two (a -> b -> a), as a class folder or as images."""
    paths = [folder / link for link in links]
    for path, target in zip(paths, paths[1:] + paths[:1]):
        path.symlink_to(target)
    named = ", ".join(str(p) for p in paths)
    with pytest.raises(UserError, match=rf"^{len(links)} symbolic link loop\(s\) \({named}\): each leads back to "
                                        "itself"):
        data.scan_folder(folder)


# ---------------------------------------------------------------- splits and seeds
@pytest.mark.parametrize("split", [(0.9, 0.1, 0.0), (1.0, 0.0, 0.0), (0.0, 0.5, 0.5), (0.8, 0.1, 0.2),
                                   (0.8, 0.1, float("nan")), (0.8, 0.2)])
def test_every_split_needs_a_positive_fraction(split):
    with pytest.raises(UserError, match=r"^--split must be three (positive )?fractions TRAIN VAL TEST"):
        TrainConfig("r", split=split).validate()


def test_folds_give_the_test_split():
    TrainConfig("r", split=(0.9, 0.1, 0.0), folds=5, fold=0).validate()
    with pytest.raises(UserError, match=r"^--split needs positive TRAIN and VAL fractions, got 1 0 0$"):
        TrainConfig("r", split=(1.0, 0.0, 0.0), folds=5, fold=0).validate()


def test_a_split_that_rounds_to_nothing_is_refused():
    """20 images per class at 1 % for test: round(0.99 * 20) = 20 = round(0.95 * 20) + 1, nothing left."""
    labels = np.repeat([0, 1], 20)
    source = data.ImageSource("folder", "ds", ["a", "b"], [f"{i}.jpg" for i in range(40)], labels)
    assert [len(data.split_manifest(source, (0.8, 0.1, 0.1), 0)[s]) for s in data.SPLITS] == [32, 4, 4]
    with pytest.raises(UserError, match=r"^the test split would be empty \(--split 0\.95 0\.04 0\.01 of 20 image\(s\) "
                                        r"in the smallest class of ds\)"):
        data.split_manifest(source, (0.95, 0.04, 0.01), 0)


def test_seeds_are_the_range_numpy_accepts():
    np.random.seed(2 ** 32 - 1)  # the reference: what tf.keras.utils.set_random_seed hands to NumPy
    with pytest.raises(ValueError):
        np.random.seed(2 ** 32)
    for seed in (0, 2 ** 32 - 1):
        TrainConfig("r", seed=seed).validate()
    for seed in (-1, 2 ** 32, 99999999999):
        with pytest.raises(UserError, match=rf"^--seed must be 0 to 4294967295 \(2\*\*32 - 1, .*\), got {seed}$"):
            TrainConfig("r", seed=seed).validate()


# ---------------------------------------------------------------- memory
def test_ann_activation_memory_by_hand():
    # VGG-16 at width 0.125, 32 px: 2 convs of 8 channels at 32 px, 2 of 16 at 16, 3 of 32 at 8, 3 of 64 at 4 and
    # 3 of 64 at 2: 16,384 + 8,192 + 6,144 + 3,072 + 768 = 34,560 values; four maps of 4 bytes each per value
    vgg = TrainConfig("r", image_size=32, width=0.125)
    assert resources.conv_net_training_bytes(vgg.conv_maps(), 3) == 16 * 34_560 * 3
    # ResNet-20 at width 1, 32 px: the stem and 3 blocks x 2 convs + a projection per stage at 16, 32, 64 channels
    # and 32, 16, 8 px: 32*32*16 * 8 + 16*16*32 * 7 + 8*8*64 * 7 = 131,072 + 57,344 + 28,672
    resnet = TrainConfig("r", image_size=32, width=1.0, architecture="resnet20")
    assert resources.conv_net_training_bytes(resnet.conv_maps(), 1) == 16 * 217_088


def test_a_mistyped_image_size_is_refused_with_the_estimate(monkeypatch, tmp_path):
    monkeypatch.setattr(resources, "available_memory", lambda: 24 * 2 ** 30)
    TrainConfig("r", image_size=64, width=0.25, batch_size=32).check_ann_memory(32)
    config = TrainConfig(str(tmp_path / "run"), dataset=str(tmp_path), image_size=6400, width=0.125, batch_size=16)
    with pytest.raises(UserError, match=r"^training the vgg16 on 6400x6400 images in batches of 16 needs about "
                                        r"329\.6 GiB of memory, more than the 24\.0 GiB available: lower --image-size "
                                        r"\(now 6400\) or --batch-size \(now 16\)$"):
        training.train_ann(config, verbose=False)  # the guard runs before the data are read (tmp_path holds none)


def test_the_decoded_cache_must_fit(monkeypatch, tmp_path, ucmerced):
    """40 images at 2048 px: 40 * 2048 * 2048 * 3 bytes = 480 MiB cached, while one batch of 1 of a width-0.01
    VGG-16 needs about 215 MiB; with 512 MiB available (410 usable), the batch fits and the cache does not."""
    dataset = make_subset(tmp_path / "ds", ["beach", "forest"], 20)
    monkeypatch.setattr(resources, "available_memory", lambda: 512 * 2 ** 20)

    def past_the_guard(*args, **kwargs):
        raise AssertionError("training went on past the cache guard")

    monkeypatch.setattr(training, "build_model", past_the_guard)  # a missing guard fails here, not after 100 epochs
    config = TrainConfig(str(tmp_path / "run"), dataset=str(dataset), image_size=2048, width=0.01, batch_size=1)
    with pytest.raises(UserError, match=r"^keeping the 40 images decoded at 2048x2048 in memory needs about 480\.0 MiB "
                                        r"of memory, more than the 512\.0 MiB available: lower --image-size"):
        training.train_ann(config, verbose=False)
