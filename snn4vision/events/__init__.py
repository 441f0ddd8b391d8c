"""Event-camera data (DVS recordings): reading, checking, binning into frames, augmentation, event datasets in a
run, and an emulator that turns still images into event recordings.

One module per concern, every public name re-exported here (``from snn4vision import events``):

- :mod:`~snn4vision.events.recordings`: the events array (:data:`EVENT_DTYPE`, tonic's layout), its checks
  (:func:`check_events`: one :class:`~snn4vision.errors.UserError` line per problem, naming the file and the
  fix) and the files (:func:`read_events`, :func:`write_events`: ``.npy``, ``.npz``, ``.h5``, AEDAT 2.0);
- :mod:`~snn4vision.events.frames`: binning into ``(T, height, width, 2)`` OFF/ON counts by time or by event
  count (:func:`to_frames`), and augmentations of events;
- :mod:`~snn4vision.events.datasets`: folders of recordings (:func:`scan_event_folder`), their seeded
  stratified splits, and a run's :class:`Binning` of them into model inputs (:func:`prepare`);
- :mod:`~snn4vision.events.emulator`: events from still images moved in saccades (:func:`emulate`,
  :func:`write_emulated_dataset`).
"""
from .datasets import (ACCUMULATED, RUN_BINNINGS, SCALE_PERCENTILE, Binning, EventSource, binning_of,
                       event_split_manifest, input_events, load_file, load_frames, looks_like_event_folder,
                       model_inputs, open_source, prepare, scan_event_folder, split_manifest)
from .emulator import EmulatorSettings, emulate, load_gray_image, to_gray, write_emulated_dataset
from .frames import (BINNING_MODES, accumulated_frame, augment, drop_events, flip_horizontal, frame_indices,
                     spatial_jitter, to_frames)
from .recordings import (DVS128_SIZE, EVENT_DTYPE, EVENT_EXTENSIONS, FIELDS, Recording, check_events, make_events,
                         read_events, sensor_dims, write_events)

__all__ = [
    "ACCUMULATED", "BINNING_MODES", "Binning", "DVS128_SIZE", "EVENT_DTYPE", "EVENT_EXTENSIONS", "EmulatorSettings",
    "EventSource", "FIELDS", "RUN_BINNINGS", "Recording", "SCALE_PERCENTILE", "accumulated_frame", "augment",
    "binning_of", "check_events", "drop_events", "emulate", "event_split_manifest", "flip_horizontal",
    "frame_indices", "input_events", "load_file", "load_frames", "load_gray_image", "looks_like_event_folder",
    "make_events", "model_inputs", "open_source", "prepare", "read_events", "scan_event_folder", "sensor_dims",
    "spatial_jitter", "split_manifest", "to_frames", "to_gray", "write_emulated_dataset", "write_events",
]
