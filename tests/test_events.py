"""Event-camera data (issue 32): file formats, checks, binning, augmentation, datasets and the emulator.

Expectations are worked out by hand (frames, AEDAT addresses, emulated event counts from the threshold
arithmetic), not by calling the code under test a second way.
"""
import json
import math
import struct

import h5py
import numpy as np
import pytest
from PIL import Image

from snn4vision import data
from snn4vision import events as ev
from snn4vision.errors import UserError

from .conftest import make_subset

TONIC_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)])


def sample_events():
    """Five events on a 4 x 3 sensor (width 4, height 3), times 0 .. 39 us."""
    return ev.make_events(x=[0, 3, 1, 1, 2], y=[0, 2, 1, 1, 0], t=[0, 10, 20, 30, 39], p=[1, 0, 1, 1, 0])


def one_line_error(call, *fragments):
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --------------------------------------------------------------------------
# Binning
# --------------------------------------------------------------------------
def test_time_binning_by_hand():
    # span 0 .. 39 inclusive = 40 us, two windows of 20 us: t 0, 10 -> frame 0; t 20, 30, 39 -> frame 1
    frames = ev.to_frames(sample_events(), (4, 3), 2, mode="time")
    expected = np.zeros((2, 3, 4, 2), np.float32)
    expected[0, 0, 0, 1] = 1  # (x 0, y 0) ON
    expected[0, 2, 3, 0] = 1  # (x 3, y 2) OFF
    expected[1, 1, 1, 1] = 2  # two ON events at (x 1, y 1)
    expected[1, 0, 2, 0] = 1  # the last event, (x 2, y 0) OFF, in the last frame
    assert frames.dtype == np.float32 and frames.shape == (2, 3, 4, 2)
    np.testing.assert_array_equal(frames, expected)


def test_count_binning_by_hand():
    # 5 events in 2 frames: frame i * 2 // 5 -> events 0, 1, 2 then 3, 4
    frames = ev.to_frames(sample_events(), (4, 3), 2, mode="count")
    expected = np.zeros((2, 3, 4, 2), np.float32)
    expected[0, 0, 0, 1] = expected[0, 2, 3, 0] = expected[0, 1, 1, 1] = 1
    expected[1, 1, 1, 1] = expected[1, 0, 2, 0] = 1
    np.testing.assert_array_equal(frames, expected)
    # 3 frames: i * 3 // 5 = 0, 0, 1, 1, 2
    np.testing.assert_array_equal(ev.frame_indices(sample_events(), 3, "count"), [0, 0, 1, 1, 2])


def test_time_binning_with_a_fixed_span_drops_later_events():
    # 2 frames of 10 us from t = 0: t 0 -> 0, t 10 -> 1, t >= 20 outside
    np.testing.assert_array_equal(ev.frame_indices(sample_events(), 2, "time", duration_us=20), [0, 1, -1, -1, -1])
    frames = ev.to_frames(sample_events(), (4, 3), 2, duration_us=20)
    assert frames.sum() == 2 and frames[1, 2, 3, 0] == 1


def test_accumulated_frame_sums_every_event():
    frame = ev.accumulated_frame(sample_events(), (4, 3))
    assert frame.shape == (3, 4, 2)
    assert frame[1, 1, 1] == 2 and frame[0, 0, 1] == 1 and frame[2, 3, 0] == 1 and frame[0, 2, 0] == 1
    assert frame.sum() == 5


def test_binning_settings_are_checked():
    one_line_error(lambda: ev.to_frames(sample_events(), (4, 3), 0), "number of frames")
    one_line_error(lambda: ev.to_frames(sample_events(), (4, 3), 2, mode="voxel"), "unknown binning mode 'voxel'")


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------
def assert_sample(recording, size=(4, 3)):
    assert recording.events.dtype == ev.EVENT_DTYPE
    assert recording.sensor_size == size
    expected = sample_events()
    for name in ev.FIELDS:
        np.testing.assert_array_equal(recording.events[name], expected[name])


def test_npy_round_trip_tonic_layout(tmp_path):
    sample = sample_events()
    tonic = np.empty(5, [("t", np.int64), ("x", np.int16), ("p", bool), ("y", np.int16)])  # any field order
    for name in ev.FIELDS:
        tonic[name] = sample[name]
    np.save(tmp_path / "r.npy", tonic)
    assert_sample(ev.read_events(tmp_path / "r.npy", sensor_size=(4, 3, 2)))  # tonic's (w, h, 2) accepted
    one_line_error(lambda: ev.read_events(tmp_path / "r.npy"), "r.npy is not stored in the file",
                   "sensor_size=(width, height)")
    assert ev.read_events(tmp_path / "r.npy", sensor_size="infer").sensor_size == (4, 3)  # max x 3, max y 2


def test_npz_round_trips(tmp_path):
    sample = sample_events()
    np.savez(tmp_path / "columns.npz", x=sample["x"], y=sample["y"], t=sample["t"],
             p=np.where(sample["p"] == 1, 1, -1), sensor_size=[4, 3])  # -1/1 polarity read as 0/1
    assert_sample(ev.read_events(tmp_path / "columns.npz"))
    ev.write_events(tmp_path / "written.npz", sample, (4, 3))
    assert_sample(ev.read_events(tmp_path / "written.npz"))
    with np.load(tmp_path / "written.npz") as archive:
        assert sorted(archive.files) == ["events", "sensor_size"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []  # atomic: no leftovers
    one_line_error(lambda: ev.read_events(tmp_path / "written.npz", sensor_size=(8, 8)),
                   "stores a 4x3 sensor, not the 8x8 given")


def test_h5_round_trips(tmp_path):
    sample = sample_events()
    with h5py.File(tmp_path / "group.h5", "w") as handle:  # DSEC-like: events/x ... plus a size attribute
        group = handle.create_group("events")
        for name in ev.FIELDS:
            group.create_dataset(name, data=sample[name].astype(np.uint16 if name in "xyp" else np.int64))
        group.attrs["sensor_size"] = [4, 3]
    assert_sample(ev.read_events(tmp_path / "group.h5"))
    with h5py.File(tmp_path / "root.hdf5", "w") as handle:  # datasets at the root, width/height attributes
        for name in ev.FIELDS:
            handle.create_dataset(name, data=sample[name])
        handle.attrs["width"], handle.attrs["height"] = 4, 3
    assert_sample(ev.read_events(tmp_path / "root.hdf5"))
    ev.write_events(tmp_path / "written.h5", sample, (4, 3))
    assert_sample(ev.read_events(tmp_path / "written.h5"))


AEDAT_HEADER = (b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
                b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
                b"# Timestamps tick is 1 us\r\n")


def aedat_bytes(records, header=AEDAT_HEADER):
    return header + b"".join(struct.pack(">II", address, t) for address, t in records)


def test_aedat_dvs128_addresses_by_hand(tmp_path):
    # DVS128 address: bit 0 polarity (0 = ON), bits 1-7 jAER column (mirrored: x = 127 - bits),
    # bits 8-14 row from the bottom (y from the top = 127 - bits), bit 15 external event
    records = [
        (0x0000, 100),  # bits all 0: x 127, y 127, ON
        (0x7F01, 200),  # row bits 127, column bits 0, bit 0 set: x 127, y 0, OFF
        (0x8000, 250),  # external (sync) event: dropped
        (0x00FE, 300),  # column bits 127: x 0, y 127, ON
        (0x0A15, 2 ** 32 - 10),  # row bits 10 -> y 117; 0x15 = column bits 10 -> x 117, bit 0 set: OFF
        (0x0A14, 5),  # same pixel ON; the 32-bit counter wrapped: t = 2**32 + 5
    ]
    (tmp_path / "r.aedat").write_bytes(aedat_bytes(records))
    recording = ev.read_events(tmp_path / "r.aedat")
    assert recording.sensor_size == (128, 128)
    np.testing.assert_array_equal(recording.events["x"], [127, 127, 0, 117, 117])
    np.testing.assert_array_equal(recording.events["y"], [127, 0, 127, 117, 117])
    np.testing.assert_array_equal(recording.events["p"], [1, 0, 1, 0, 1])
    np.testing.assert_array_equal(recording.events["t"], [100, 200, 300, 2 ** 32 - 10, 2 ** 32 + 5])


def test_aedat_refusals(tmp_path):
    (tmp_path / "v3.aedat").write_bytes(aedat_bytes([(0, 1)], b"#!AER-DAT3.1\r\n"))
    one_line_error(lambda: ev.read_events(tmp_path / "v3.aedat"), "v3.aedat is AEDAT 3.1",
                   "only AEDAT 2.0 (DVS128)")
    (tmp_path / "cut.aedat").write_bytes(aedat_bytes([(0, 1), (2, 3)])[:-3])
    one_line_error(lambda: ev.read_events(tmp_path / "cut.aedat"), "cut.aedat is truncated")
    (tmp_path / "plain.aedat").write_bytes(struct.pack(">II", 0, 1))
    one_line_error(lambda: ev.read_events(tmp_path / "plain.aedat"), "is not AEDAT (no '#!AER-DAT' header")
    (tmp_path / "davis.aedat").write_bytes(aedat_bytes([(0x00400000, 1)]))
    one_line_error(lambda: ev.read_events(tmp_path / "davis.aedat"), "wider than the DVS128's 16 bits")


def save_columns(path, sensor_size=(4, 4), **columns):
    np.savez(path, sensor_size=sensor_size, **columns)
    return path


def test_bad_recordings_are_one_line_each(tmp_path):
    good = dict(x=[0, 1, 2], y=[0, 1, 2], t=[0, 10, 20], p=[0, 1, 1])
    unsorted = save_columns(tmp_path / "unsorted.npz", **{**good, "t": [0, 20, 10]})
    one_line_error(lambda: ev.read_events(unsorted), "event times in event file", "unsorted.npz are not sorted",
                   "(event 2 at t=10 us comes after t=20 us)", "sort the events by t")
    outside = save_columns(tmp_path / "outside.npz", **{**good, "x": [0, 1, 4]})  # x = width: one too far
    one_line_error(lambda: ev.read_events(outside), "outside.npz fall outside its 4x4 sensor (x 0 .. 4",
                   "the size is the file's own: fix the file's size or its events")
    np.save(tmp_path / "outside.npy", np.rec.fromarrays([[0, 1, 4], [0, 1, 2], [0, 1, 2], [0, 1, 1]],
                                                        names="x,y,t,p"))
    one_line_error(lambda: ev.read_events(tmp_path / "outside.npy", sensor_size=(4, 4)),  # the size given: fixable
                   "fall outside its 4x4 sensor", "sensor_size=(width, height), or --sensor-size WIDTH HEIGHT")
    negative = save_columns(tmp_path / "negative.npz", **{**good, "y": [0, -1, 2]})
    one_line_error(lambda: ev.read_events(negative), "fall outside its 4x4 sensor")
    empty = save_columns(tmp_path / "empty.npz", x=[], y=[], t=[], p=[])
    one_line_error(lambda: ev.read_events(empty), "empty.npz holds no events")
    polarity = save_columns(tmp_path / "polarity.npz", **{**good, "p": [0, 2, 1]})
    one_line_error(lambda: ev.read_events(polarity), "polarity.npz has unknown polarity values (0, 1, 2)")
    mixed = save_columns(tmp_path / "mixed.npz", **{**good, "p": [-1, 0, 1]})
    one_line_error(lambda: ev.read_events(mixed), "unknown polarity values (-1, 0, 1)")
    no_p = save_columns(tmp_path / "no_p.npz", x=[0], y=[0], t=[0])
    one_line_error(lambda: ev.read_events(no_p), "no_p.npz lacks the field(s) p")
    no_t = np.zeros(2, [("x", np.int16), ("y", np.int16), ("p", bool)])
    np.save(tmp_path / "no_t.npy", no_t)
    one_line_error(lambda: ev.read_events(tmp_path / "no_t.npy", (4, 4)), "no_t.npy lacks the field(s) t")
    np.save(tmp_path / "plain.npy", np.zeros((3, 4)))  # an unnamed (N, 4) array: which column is which?
    one_line_error(lambda: ev.read_events(tmp_path / "plain.npy", (4, 4)), "lacks the field(s) x, y, t, p",
                   "not a structured array")
    seconds = save_columns(tmp_path / "seconds.npz", **{**good, "t": [0.0, 0.5e-5, 1.5e-5]})
    one_line_error(lambda: ev.read_events(seconds), "t values that are not whole numbers", "integer microseconds")
    for name in ("broken.npz", "broken.h5", "broken.npy"):
        (tmp_path / name).write_bytes(b"not an event file at all")
        one_line_error(lambda: ev.read_events(tmp_path / name, (4, 4)), f"cannot read event file {tmp_path / name}",
                       "replace or remove the file")
    with h5py.File(tmp_path / "no_x.h5", "w") as handle:
        for name in ("y", "t", "p"):
            handle.create_dataset(f"events/{name}", data=[0])
    one_line_error(lambda: ev.read_events(tmp_path / "no_x.h5", (4, 4)), "no_x.h5 lacks the dataset(s) x")
    one_line_error(lambda: ev.read_events(tmp_path / "gone.npz"), "gone.npz does not exist")
    one_line_error(lambda: ev.read_events(tmp_path / "r.csv"), "r.csv is not an event file (.csv)")


# --------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------
def random_events(count, width, height, seed=0):
    rng = np.random.default_rng(seed)
    return ev.make_events(rng.integers(0, width, count), rng.integers(0, height, count),
                          np.sort(rng.integers(0, 10 ** 6, count)), rng.integers(0, 2, count))


def test_flip_mirrors_width_minus_one_minus_x():
    events = ev.make_events(x=[0, 1, 9], y=[2, 3, 4], t=[0, 1, 2], p=[1, 0, 1])
    flipped = ev.flip_horizontal(events, (10, 5))
    np.testing.assert_array_equal(flipped["x"], [9, 8, 0])
    np.testing.assert_array_equal(flipped[["y", "t", "p"]], events[["y", "t", "p"]])
    many = random_events(1000, 33, 17)
    np.testing.assert_array_equal(ev.flip_horizontal(ev.flip_horizontal(many, (33, 17)), (33, 17)), many)


def test_spatial_jitter_shifts_all_events_alike_and_drops_those_pushed_off():
    centre = ev.make_events(x=[4, 5, 6], y=[4, 5, 6], t=[0, 1, 2], p=[0, 1, 0])
    edges = ev.make_events(x=[0, 10, 19], y=[5, 0, 9], t=[0, 1, 2], p=[1, 1, 0])  # on a 20 x 10 sensor
    seen_shifts = set()
    for seed in range(20):
        shifted = ev.spatial_jitter(centre, (20, 10), np.random.default_rng(seed), max_shift=2)
        assert len(shifted) == 3  # 2 pixels from the edge: none can leave
        dx, dy = shifted["x"] - centre["x"], shifted["y"] - centre["y"]
        assert len(set(dx)) == 1 and len(set(dy)) == 1 and abs(dx[0]) <= 2 and abs(dy[0]) <= 2
        np.testing.assert_array_equal(shifted[["t", "p"]], centre[["t", "p"]])
        seen_shifts.add((int(dx[0]), int(dy[0])))
        rng_copy = np.random.default_rng(seed)
        sx, sy = rng_copy.integers(-2, 3, size=2)
        moved = ev.spatial_jitter(edges, (20, 10), np.random.default_rng(seed), max_shift=2)
        expected = [(x + sx, y + sy) for x, y in zip(edges["x"], edges["y"]) if 0 <= x + sx < 20 and 0 <= y + sy < 10]
        assert list(zip(moved["x"], moved["y"])) == expected
    assert len(seen_shifts) > 5
    np.testing.assert_array_equal(ev.spatial_jitter(edges, (20, 10), np.random.default_rng(0), 0), edges)


def test_drop_rate_is_about_right_and_keeps_order():
    events = random_events(100_000, 64, 64)
    kept = ev.drop_events(events, np.random.default_rng(1), rate=0.3)
    assert abs(len(kept) / len(events) - 0.7) < 0.01
    assert np.all(np.diff(kept["t"]) >= 0) and np.isin(kept["t"], events["t"]).all()
    assert len(ev.drop_events(events, np.random.default_rng(1), 0.0)) == len(events)
    one_line_error(lambda: ev.drop_events(events, np.random.default_rng(1), 1.5), "drop rate must be between 0 and 1")


def test_augment_is_seeded():
    events = random_events(5000, 32, 32)
    one = ev.augment(events, (32, 32), np.random.default_rng(7))
    two = ev.augment(events, (32, 32), np.random.default_rng(7))
    np.testing.assert_array_equal(one, two)
    assert len(one) < len(events)


def test_training_event_drops_by_pixel_and_by_time():
    import tensorflow as tf

    frames = tf.constant(np.random.default_rng(0).uniform(0.5, 2.0, (8, 16, 16, 2)), tf.float32)
    drops = data.Augmentation(zoom=None, pad_crop=None, flips=False, rotations=False, brightness=None,
                              contrast=None, hue=None, saturation=None, drop_pixels=0.5, drop_time=0.5)
    pixel_fractions, windows = [], []
    for i in range(60):
        seed = tf.constant([3, i], tf.int64)
        out = drops(frames, seed).numpy()
        np.testing.assert_array_equal(out, drops(frames, seed).numpy())  # a pure function of frames and seed
        kept = out != 0
        assert np.all(out[kept] == frames.numpy()[kept])  # nothing is scaled, only dropped
        silent_steps = ~kept.any(axis=(1, 2, 3))
        live = out[~silent_steps]
        dead_pixels = ~kept[~silent_steps].any(axis=(0, 3))  # a pixel is dropped in every live frame and channel
        assert np.all(live[:, dead_pixels] == 0) and np.all(live[:, ~dead_pixels] != 0)
        pixel_fractions.append(dead_pixels.mean())
        steps = np.flatnonzero(silent_steps)
        assert len(steps) <= 4 and (len(steps) == 0 or np.all(np.diff(steps) == 1))  # one window, < half
        windows.append(len(steps))
    assert abs(np.mean(pixel_fractions) - 0.25) < 0.05  # drawn from [0, 0.5): 0.25 on average
    assert max(windows) >= 3 and min(windows) == 0
    # an accumulated frame loses pixels only; the events policy moves frames as the geometric one does
    single = drops(frames[0], tf.constant([3, 1], tf.int64)).numpy()
    assert ((single == 0).all(axis=-1) | (single != 0).all(axis=-1)).all()
    seed = tf.constant([5, 9], tf.int64)
    moved = data.AUGMENTATIONS["geometric"](frames, seed).numpy()
    dropped = data.AUGMENTATIONS["events"](frames, seed).numpy()
    assert np.all((dropped == moved) | (dropped == 0)) and (dropped == 0).sum() > (moved == 0).sum()


# --------------------------------------------------------------------------
# Emulator
# --------------------------------------------------------------------------
QUIET = dict(noise_rate_hz=0.0, threshold_sigma=0.0, steps=60)


def edge_image(width=32, height=32, bright_from=16):
    image = np.zeros((height, width))
    image[:, bright_from:] = 1.0
    return image


def test_constant_image_gives_only_noise():
    flat = np.full((32, 32), 0.4)
    assert len(ev.emulate(flat, ev.EmulatorSettings(**QUIET))) == 0  # triangle saccades over a flat image
    assert len(ev.emulate(edge_image(), ev.EmulatorSettings(**{**QUIET, "amplitude": 0.0}))) == 0  # no motion
    noisy = ev.emulate(flat, ev.EmulatorSettings(noise_rate_hz=50.0, steps=20), seed=3)
    expected = 32 * 32 * 50.0 * 0.3  # pixels x rate x 0.3 s
    assert abs(len(noisy) - expected) < 4 * math.sqrt(expected)
    assert 0 <= noisy["t"].min() and noisy["t"].max() <= 300_000 and np.all(np.diff(noisy["t"]) >= 0)
    assert 0.4 < noisy["p"].mean() < 0.6


def test_step_edge_moved_right_darkens_the_pixels_it_passes():
    # dark left, bright from column 16; moved 3 pixels right: columns 16, 17, 18 go from 1 to 0
    settings = ev.EmulatorSettings(**QUIET, waypoints=((0, 0), (3, 0)))
    events = ev.emulate(edge_image(), settings)
    assert set(events["p"]) == {0}
    assert set(events["x"]) == {16, 17, 18}
    # each of those pixels falls from log(1 + 0.02) to log(0 + 0.02): floor(change / 0.2) OFF events
    per_pixel = math.floor(math.log(1.02 / 0.02) / 0.2)
    assert len(events) == 32 * 3 * per_pixel
    mean_t = [events["t"][events["x"] == x].mean() for x in (16, 17, 18)]
    assert mean_t[0] < mean_t[1] < mean_t[2]  # the edge reaches column 16 first


def test_sub_pixel_motion_is_interpolated():
    # moved half a pixel: column 16 becomes 0.5 (bilinear), a change of log(0.52 / 1.02) = -0.674: 3 OFF events
    events = ev.emulate(edge_image(), ev.EmulatorSettings(**QUIET, waypoints=((0, 0), (0.5, 0))))
    assert set(events["x"]) == {16} and set(events["p"]) == {0}
    assert len(events) == 32 * math.floor(-math.log(0.52 / 1.02) / 0.2)


def test_bright_bar_moved_right_gives_on_ahead_and_off_behind():
    image = np.zeros((16, 32))
    image[:, 10:14] = 1.0
    events = ev.emulate(image, ev.EmulatorSettings(**QUIET, waypoints=((0, 0), (3, 0))))
    on, off = events[events["p"] == 1], events[events["p"] == 0]
    assert set(on["x"]) == {14, 15, 16}  # the leading edge brightens the pixels right of the bar
    assert set(off["x"]) == {10, 11, 12}  # the trailing edge darkens the bar's first columns
    assert len(on) == len(off)  # same contrast both ways with equal thresholds


def test_triangle_saccades():
    path = ev.EmulatorSettings(amplitude=4.0).path()
    assert len(path) == 4 and np.allclose(path[0], path[-1])
    sides = np.linalg.norm(np.diff(path, axis=0), axis=1)
    np.testing.assert_allclose(sides, 4.0)


def test_lower_threshold_gives_more_events_on_a_real_image(ucmerced):
    image = ev.load_gray_image(ucmerced / "denseresidential" / "denseresidential00.jpg", 32)
    assert image.shape == (32, 32) and 0 <= image.min() and image.max() <= 1
    counts = [len(ev.emulate(image, ev.EmulatorSettings(on_threshold=th, off_threshold=th, **QUIET)))
              for th in (0.3, 0.2, 0.1)]
    assert 0 < counts[0] < counts[1] < counts[2]


def test_emulator_is_seeded():
    image = np.random.default_rng(0).random((24, 24))
    settings = ev.EmulatorSettings(steps=40)
    np.testing.assert_array_equal(ev.emulate(image, settings, seed=5), ev.emulate(image, settings, seed=5))
    assert not np.array_equal(ev.emulate(image, settings, seed=5), ev.emulate(image, settings, seed=6))
    one_line_error(lambda: ev.emulate(image, ev.EmulatorSettings(on_threshold=0)), "on_threshold must be above 0")


# --------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------
def image_folder(root, classes=3, per_class=10, side=16):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((side, side, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"img{i:02d}.png")
    return root


FAST = ev.EmulatorSettings(steps=20)


def test_emulated_dataset_layout_seeding_and_split(tmp_path):
    images = image_folder(tmp_path / "images")
    summary = ev.write_emulated_dataset(images, tmp_path / "events", FAST, seed=3)
    assert summary["recordings"] == 30 and summary["classes"] == 3
    assert json.loads((tmp_path / "events" / "emulator.json").read_text())["seed"] == 3
    source = ev.scan_event_folder(tmp_path / "events")
    assert source.classes == ["class0", "class1", "class2"]
    assert source.items[:2] == ["class0/img00.npz", "class0/img01.npz"]
    first = source.read(0)
    assert first.sensor_size == (16, 16) and len(first.events) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events", "images"]  # no partial folder left
    # recording i is seeded by (seed, i): a limited run makes the same first recordings
    ev.write_emulated_dataset(images, tmp_path / "few", FAST, seed=3, limit_per_class=2)
    few = ev.scan_event_folder(tmp_path / "few")
    assert few.items == ["class0/img00.npz", "class0/img01.npz", "class1/img00.npz", "class1/img01.npz",
                         "class2/img00.npz", "class2/img01.npz"]
    np.testing.assert_array_equal(few.read(2).events, source.read(10).events)

    # the split: image-split code, stratified and seeded; same recordings as the images' split
    manifest = ev.event_split_manifest(source, (0.8, 0.1, 0.1), seed=5)
    image_manifest = data.split_manifest(data.scan_folder(images), (0.8, 0.1, 0.1), seed=5)
    for split, per_class in (("train", 8), ("val", 1), ("test", 1)):
        stems = [item.rsplit(".", 1)[0] for item, _ in manifest[split]]
        assert stems == [item.rsplit(".", 1)[0] for item, _ in image_manifest[split]]
        assert np.bincount([label for _, label in manifest[split]]).tolist() == [per_class] * 3
    assert ev.event_split_manifest(source, seed=5) == manifest
    assert ev.event_split_manifest(source, seed=6)["test"] != manifest["test"]
    folds = [ev.event_split_manifest(source, seed=5, folds=5, fold=k)["test"] for k in range(5)]
    assert sorted(item for fold in folds for item, _ in fold) == sorted(source.items)

    frames, labels = ev.load_frames(source, [0, 10, 20], 4)
    assert frames.shape == (3, 4, 16, 16, 2) and labels.tolist() == [0, 1, 2]
    assert frames[0].sum() == len(source.read(0).events)


def test_emulated_dataset_refuses_to_overwrite(tmp_path):
    images = image_folder(tmp_path / "images", classes=2, per_class=2)
    out = tmp_path / "events"
    out.mkdir()  # an empty folder is fine
    ev.write_emulated_dataset(images, out, FAST)
    (out / "stale.txt").write_text("from before")
    one_line_error(lambda: ev.write_emulated_dataset(images, out, FAST), f"output folder {out} is not empty",
                   "overwrite=True")
    assert (out / "stale.txt").exists()
    ev.write_emulated_dataset(images, out, FAST, overwrite=True)
    assert not (out / "stale.txt").exists() and len(ev.scan_event_folder(out).items) == 4
    one_line_error(lambda: ev.write_emulated_dataset(images, images / "events", FAST), "is inside the image folder")


def test_a_failed_emulation_leaves_nothing(tmp_path, monkeypatch):
    images = image_folder(tmp_path / "images", classes=2, per_class=3)
    calls = []

    def failing(image, settings, seed):
        calls.append(1)
        if len(calls) == 3:
            raise UserError("stop here")
        return ev.make_events([0], [0], [0], [1])

    monkeypatch.setattr(ev.emulator, "emulate", failing)  # where write_emulated_dataset looks it up
    with pytest.raises(UserError):
        ev.write_emulated_dataset(images, tmp_path / "events", FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_real_images_make_an_event_dataset(tmp_path, ucmerced):
    images = make_subset(tmp_path / "ucm", ["beach", "runway"], 2)
    ev.write_emulated_dataset(images, tmp_path / "events", ev.EmulatorSettings(steps=60), size=32)
    source = ev.scan_event_folder(tmp_path / "events")
    assert source.classes == ["beach", "runway"] and len(source.items) == 4
    recording = source.read(3)
    assert recording.sensor_size == (32, 32) and set(recording.events["p"]) == {0, 1}


def test_event_folder_problems(tmp_path):
    one_line_error(lambda: ev.scan_event_folder(tmp_path / "none"), "does not exist")
    (tmp_path / "a").mkdir()
    one_line_error(lambda: ev.scan_event_folder(tmp_path), "holds no event files")
