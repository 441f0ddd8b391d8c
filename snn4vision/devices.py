"""Device profiles: the TOML files of the top-level ``energy/`` folder (one per device; installed as the package
``snn4vision.profiles``), their validation and the :class:`Device` each becomes. See ``energy/README.md`` for the
sources of every figure."""
from __future__ import annotations

import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

#: The profiles shipped with the package: ``energy/`` mapped to ``snn4vision.profiles`` (package data, read through
#: importlib.resources so that any install, editable, zipped or not, finds them).
ENERGY_DIR = importlib.resources.files("snn4vision.profiles")


@dataclass(frozen=True)
class Device:
    """Energy figures of one device (joules)."""

    name: str
    spiking: bool
    energy_per_synop: float  # per synaptic operation: an accumulate on spiking devices, a MAC otherwise
    energy_per_neuron: float  # per neuron (or synaptic filter) update
    energy_per_mac: float | None = None  # per MAC with an analog operand; None: energy_per_synop
    source: str = ""
    # The memory-aware model (snn4vision.memory_costs); defaults: memory priced inside the per-op figures.
    graded: bool = False  # a burst of spikes in one step is one message with a payload (Loihi 2)
    energy_per_event: float = 0.0  # per spike message sent (routing, queueing)
    energy_per_payload_bit: float = 0.0  # per payload bit of a graded synaptic operation
    energy_per_address_op: float = 0.0  # per integer op of event addressing
    sram_energy_per_bit: float | None = None  # J per access and bit of the memory's capacity (None: no SRAM model)
    sram_energy_fixed: float | None = None  # J per access of an empty memory
    sram_access_bits: int | None = None  # the access width the two figures above are for
    weight_bits: int = 32
    accumulator_bits: int = 32  # membrane potentials, biases and partial sums
    activation_bits: int | str = 32  # the ANN's activations; "levels": its QCFS levels' ceil(log2(L + 1)) bits
    event_queue_words: int = 1000  # an SNN layer's input/output event queues (Lemaire et al.'s FIFOs)
    ann_output_tile: int = 1  # output positions that share one fetch of a weight (ANN data reuse)
    ann_channel_tile: int = 1  # output channels that share one fetch of an input value

    @property
    def mac(self) -> float:
        return self.energy_per_synop if self.energy_per_mac is None else self.energy_per_mac


def load_devices(directory: str | Path | None = None) -> dict:
    """All ``*.toml`` device profiles of ``directory`` (default: the shipped ``profiles/``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib

    directory = Path(directory) if directory else ENERGY_DIR
    files = sorted((f for f in directory.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name) \
        if directory.is_dir() else []
    if not files:
        raise UserError(f"no device profiles (*.toml) in {directory}: pass --profiles with the folder that holds them")
    devices = {}
    for path in files:
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"device profile {path} is invalid ({exc}): it needs name, spiking, energy_per_synop, "
                            "energy_per_neuron and optionally energy_per_mac and source") from None
        device = Device(**check_profile(values, path))
        if device.name in devices:
            raise UserError(f"device profile {path} is named {device.name!r} like another profile in {directory}: "
                            "give each profile its own name")
        devices[device.name] = device
    return devices


def _energy(value) -> bool:
    """Joules: a finite number, 0 or more (a string, a boolean or a negative value is a typo)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


#: Each key of a profile: (required, check, what the check wants).
PROFILE_KEYS = {
    "name": (True, lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string"),
    "spiking": (True, lambda v: isinstance(v, bool), "true or false"),
    "energy_per_synop": (True, _energy, "a number of joules, 0 or more"),
    "energy_per_neuron": (True, _energy, "a number of joules, 0 or more"),
    "energy_per_mac": (False, _energy, "a number of joules, 0 or more"),
    "source": (False, lambda v: isinstance(v, str), "a string"),
    "graded": (False, lambda v: isinstance(v, bool), "true or false"),
    "energy_per_event": (False, _energy, "a number of joules, 0 or more"),
    "energy_per_payload_bit": (False, _energy, "a number of joules, 0 or more"),
    "energy_per_address_op": (False, _energy, "a number of joules, 0 or more"),
    "sram_energy_per_bit": (False, _energy, "a number of joules, 0 or more"),
    "sram_energy_fixed": (False, _energy, "a number of joules, 0 or more"),
    "sram_access_bits": (False, lambda v: _count(v), "a whole number of bits, 1 or more"),
    "weight_bits": (False, lambda v: _count(v), "a whole number of bits, 1 or more"),
    "accumulator_bits": (False, lambda v: _count(v), "a whole number of bits, 1 or more"),
    "activation_bits": (False, lambda v: _count(v) or v == "levels", 'a whole number of bits or "levels"'),
    "event_queue_words": (False, lambda v: _count(v), "a whole number, 1 or more"),
    "ann_output_tile": (False, lambda v: _count(v), "a whole number, 1 or more"),
    "ann_channel_tile": (False, lambda v: _count(v), "a whole number, 1 or more"),
}
SRAM_KEYS = ("sram_energy_per_bit", "sram_energy_fixed", "sram_access_bits")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_profile(values: dict, path) -> dict:
    """``values`` of the profile file ``path`` if every key is known and of its type and range; else one
    UserError naming the file, the key and what it should be (a wrong value would give wrong joules silently)."""
    for key in values:
        if key not in PROFILE_KEYS:
            raise UserError(f"device profile {path} has an unknown key {key!r}: use {', '.join(PROFILE_KEYS)}")
    for key, (required, valid, wanted) in PROFILE_KEYS.items():
        if key not in values:
            if required:
                raise UserError(f"device profile {path} is invalid: {key} is missing (it should be {wanted})")
        elif not valid(values[key]):
            raise UserError(f"device profile {path} is invalid: {key} must be {wanted}, got {values[key]!r}")
    given = [k for k in SRAM_KEYS if k in values]
    if given and len(given) < len(SRAM_KEYS):  # half an SRAM law would price memory at 0 silently
        raise UserError(f"device profile {path} is invalid: it has {', '.join(given)} but not "
                        f"{', '.join(k for k in SRAM_KEYS if k not in given)}: give all three or none")
    return values
