"""Edge-filter inputs against hand-computed 3x3 cases and SciPy's Prewitt and Sobel on real UC Merced images."""
import numpy as np
import pytest
import scipy.ndimage as ndimage

from snn4vision import cli, data, edges
from snn4vision.errors import UserError

# a vertical step from 0 to 1 between the second and third column
STEP = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1]], np.float32)


def _apply(kind, image, **flags):
    return edges.EdgeFilter(kind, **flags)(np.repeat(image[None, :, :, None], 3, axis=3))[0, :, :, 0].numpy()


def test_prewitt_and_sobel_of_a_step_by_hand_with_the_reflecting_border():
    # (zero padding, SNN4Space's rule, would give the last column 1 - 0 on the left and 0 - 0 on the right)
    # reflect: column -1 is column 0 and column 3 is column 2, so the first column sees no step (0 | 0 0 -> 0)
    # and the last sees it on its left (0 1 | 1): |gx| = 3 (Prewitt) or 4 (Sobel) in every row; gy = 0
    # (rows are equal, and reflection keeps them equal at the top and bottom borders)
    prewitt = 3 / np.sqrt(10)
    np.testing.assert_allclose(_apply("prewitt", STEP), [[0, prewitt, prewitt]] * 3, rtol=1e-6)
    sobel = 4 / np.sqrt(20)
    np.testing.assert_allclose(_apply("sobel", STEP), [[0, sobel, sobel]] * 3, rtol=1e-6)
    np.testing.assert_allclose(_apply("prewitt", STEP, squared=True), [[0, 0.9, 0.9]] * 3, rtol=1e-6)
    image = STEP * 0.5 + 0.25  # the mask keeps the original pixels where there is an edge
    np.testing.assert_allclose(_apply("prewitt", image, mask=True), [[0, 0.25, 0.75]] * 3, rtol=1e-6)


def test_edges_below_two_grey_levels_are_dropped():
    # a step of 2 grey levels gives 6 / 255 / sqrt(10) = 1.9 / 255 < 2 / 255: dropped; 3 levels: 2.8 / 255, kept
    assert not _apply("prewitt", STEP * 2 / 255).any()
    np.testing.assert_allclose(_apply("prewitt", STEP * 3 / 255)[:, 1], 9 / 255 / np.sqrt(10), rtol=1e-5)


def _scipy_reference(image, kind):
    """Gradient magnitude per channel with SciPy's filters (mode 'reflect' is the same border rule)."""
    function, divisor = {"prewitt": (ndimage.prewitt, np.sqrt(10)), "sobel": (ndimage.sobel, np.sqrt(20))}[kind]
    return np.stack([np.hypot(function(image[..., c], axis=0, mode="reflect"),
                              function(image[..., c], axis=1, mode="reflect")) for c in range(3)], -1) / divisor


@pytest.mark.parametrize("kind", ["prewitt", "sobel"])
def test_edge_maps_match_scipy_on_real_images(ucmerced, kind):
    paths = [sorted((ucmerced / name).iterdir())[0] for name in ("airplane", "forest", "river", "tenniscourt")]
    images = np.stack([data.load_image_file(p, 64) for p in paths]).astype(np.float32) / 255
    ours = edges.EdgeFilter(kind)(images).numpy()
    squared = edges.EdgeFilter(kind, squared=True, mask=True)(images).numpy()
    for image, edge_map, masked in zip(images, ours, squared):
        reference = _scipy_reference(image, kind)
        clear = np.abs(reference - edges.SMALL) > 1e-5  # away from the threshold, where rounding may tip it
        kept = np.where(reference >= edges.SMALL, reference, 0)
        np.testing.assert_allclose(edge_map[clear], kept[clear], atol=1e-5)
        assert 0.3 < (edge_map > 0).mean() < 1.0  # real images: edges in most pixels, flat areas in some
        clear = np.abs(reference ** 2 - edges.SMALL) > 1e-5
        np.testing.assert_array_equal(masked[clear], np.where(reference ** 2 >= edges.SMALL, image, 0)[clear])


def test_snn4space_dataset_names():
    assert edges.split_dataset_name("ucm_prewitt_sq_mask") == ("uc_merced", "prewitt_sq_mask")
    assert edges.split_dataset_name("eurosat_sobel") == ("eurosat", "sobel")
    assert edges.split_dataset_name("ucm") == ("uc_merced", "none")
    assert edges.split_dataset_name("../shared/data/ucmerced") == ("../shared/data/ucmerced", "none")
    assert edges.parse("sobel_mask_sq") == edges.EdgeFilter("sobel", squared=True, mask=True)
    for bad in ("ucm_prewitt_blur", "prewitt_sq_sq", "canny"):
        with pytest.raises(UserError, match="unknown input transform"):
            edges.parse(bad) if "ucm" not in bad else edges.split_dataset_name(bad)


def _args(*argv):
    return cli.train_ann_parser().parse_args(["--run", "r", *argv])


def test_transform_flags_and_names_agree_or_are_refused():
    assert cli.input_transform(_args("--dataset", "ucm_sobel_mask")) == ("uc_merced", "sobel_mask")
    assert cli.input_transform(_args("--input-transform", "prewitt", "--squared")) == ("uc_merced", "prewitt_sq")
    assert cli.train_config(_args("--dataset", "ucm_prewitt")).input_transform == "prewitt"
    assert cli.input_transform(_args("--dataset", "ucm_prewitt_sq", "--squared")) == ("uc_merced", "prewitt_sq")
    for flags in (["--input-transform", "sobel"], ["--squared"], ["--input-transform", "none"]):
        with pytest.raises(UserError, match="already selects the input transform prewitt, but"):
            cli.input_transform(_args("--dataset", "ucm_prewitt", *flags))
    with pytest.raises(UserError, match="add --input-transform"):
        cli.input_transform(_args("--mask"))
