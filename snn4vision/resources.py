"""What a stage may ask of the machine: timesteps, memory and disk space, checked before any work starts.

The estimates are deliberately rough (within a small factor) and err on the
large side; they exist so that a mistyped ``--timesteps 1000000`` fails in
one line at once instead of running for days or dying of memory halfway.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import UserError

#: The largest T a stage accepts. Rate-coded conversions need at most a few thousand steps; every step costs a
#: full pass over the network, so beyond this a run takes days.
MAX_TIMESTEPS = 4096
#: Share of the available memory an estimate may take before a stage refuses.
MEMORY_SHARE = 0.8
_FLOAT = 4  # bytes


def size_text(num_bytes: float) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes / 1024:.0f} KiB"


def check_timesteps(timesteps: int, flag: str = "--timesteps") -> None:
    """Refuse T below 1 or above :data:`MAX_TIMESTEPS`."""
    if timesteps < 1:
        raise UserError(f"{flag} must be at least 1, got {timesteps}")
    if timesteps > MAX_TIMESTEPS:
        raise UserError(f"{flag} {timesteps} is above the largest supported T, {MAX_TIMESTEPS} (every step is a "
                        f"full pass over the network): choose {flag} {MAX_TIMESTEPS} or less")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``); None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed: float, what: str, fix: str) -> None:
    """Refuse when ``needed`` bytes exceed :data:`MEMORY_SHARE` of the available memory, saying both."""
    available = available_memory()
    if available is not None and needed > MEMORY_SHARE * available:
        raise UserError(f"{what} needs about {size_text(needed)} of memory, more than the "
                        f"{size_text(available)} available: {fix}")


def spiking_network_training_bytes(neurons_per_image: int, batch_size: int, timesteps: int) -> int:
    """Memory of one training step through time of a converted network: about eight tensors the size of the
    network's neurons (current, drive, membrane, count, spikes, straight-through output, filter, pooled map)
    are kept for every step and image for the backward pass."""
    return 8 * _FLOAT * neurons_per_image * batch_size * timesteps


def transformer_bytes(image_size: int, dim: int, depth: int, heads: int, mlp_ratio: int, pooling: str,
                      batch_size: int, timesteps: int, training: bool) -> int:
    """Memory of one batch through a spiking transformer, whose T steps are unrolled and kept at once.

    Per step and image: the stem's conv, norm and spike maps at each of its four resolutions, then per
    block the q, k, v, projection and MLP tensors (conv, norm, spikes each) over N tokens plus the heads'
    N x N attention maps. Training keeps about twice as much (activations and their gradients).
    """
    size, stem = image_size, 0
    for channels, pool in zip((dim // 8, dim // 4, dim // 2, dim), pooling):
        stem += 3 * size * size * channels
        size = size // 2 if pool == "1" else size
    tokens = size * size
    blocks = depth * ((16 + 3 * mlp_ratio) * tokens * dim + heads * tokens * tokens)
    return (2 if training else 1) * _FLOAT * (stem + blocks) * batch_size * timesteps


def conv_net_training_bytes(maps: list, batch_size: int) -> int:
    """Memory of one training step of a conv net whose conv layers output ``maps``, ``(side, channels)`` each:
    about four maps of each conv's output size (conv, BatchNorm and activation outputs kept for the backward
    pass, and the gradient being computed). Measured peaks on CPU were 0.55 (ResNet-18) to 0.8 (VGG-16) of it."""
    return 4 * _FLOAT * batch_size * sum(side * side * channels for side, channels in maps)


def check_disk(directory: Path, needed: float, what: str) -> None:
    """Refuse when the disk holding ``directory`` has less than ``needed`` bytes free."""
    directory = Path(directory)
    existing = next((p for p in [directory, *directory.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise UserError(f"{what} needs about {size_text(needed)} of disk space, but only {size_text(free)} is free "
                        f"on the disk of {directory}: free some space or choose a --run directory on another disk")


def stage_disk_bytes(parameters: int, copies: int) -> int:
    """Disk a stage writes: ``copies`` float32 copies of the weights (weights, optimizer slots, checkpoint,
    best weights) plus 16 MiB for its JSON, figures and TensorBoard logs."""
    return copies * _FLOAT * parameters + 16 * 2 ** 20
