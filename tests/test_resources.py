"""Bounds checked before a stage starts: T, memory and disk."""
from collections import namedtuple

import pytest

from snn4vision import resources
from snn4vision.stages.convert import ConvertConfig
from snn4vision.errors import UserError
from snn4vision.stages.fine_tuning import FineTuneConfig
from snn4vision.rundir import TrainConfig


def test_timesteps_are_bounded_in_every_config():
    resources.check_timesteps(resources.MAX_TIMESTEPS)
    for make in (lambda t: ConvertConfig("r", max_timesteps=t).validate(),
                 lambda t: FineTuneConfig("r", timesteps=t).validate(),
                 lambda t: TrainConfig("r", architecture="spikformer", transformer={"timesteps": t}).validate()):
        with pytest.raises(UserError, match=r"^--timesteps 1000000 is above the largest supported T, 4096"):
            make(1_000_000)
        with pytest.raises(UserError, match=r"^--timesteps must be at least 1, got 0$"):
            make(0)


def test_transformer_memory_by_hand():
    # 32 px, dim 16, pooling 0011: stem 3 * (32*32*2 + 32*32*4 + 32*32*8 + 16*16*16) = 55,296 floats;
    # 8 x 8 = 64 tokens; one block: (16 + 3*4) * 64 * 16 + 2 heads * 64 * 64 = 36,864 floats
    per_step_image = 55_296 + 36_864
    assert resources.transformer_bytes(32, 16, 1, 2, 4, "0011", batch_size=3, timesteps=5, training=False) == \
        4 * per_step_image * 3 * 5
    assert resources.transformer_bytes(32, 16, 1, 2, 4, "0011", 3, 5, training=True) == 2 * 4 * per_step_image * 15



def test_a_transformer_run_at_another_t_is_checked_at_that_t(monkeypatch):
    """predict and energy run a trained transformer at --timesteps T: its memory is the asked T's, not the
    trained one's (5 steps of the hand-computed network above need 5.3 MiB for 3 images, 50 steps 52.7 MiB)."""
    monkeypatch.setattr(resources, "available_memory", lambda: 20 * 2 ** 20)
    config = TrainConfig("r", architecture="spikformer", image_size=32, transformer=dict(
        depth=1, dim=16, heads=2, mlp_ratio=4, pooling="0011", timesteps=5))
    config.check_transformer_memory(3, training=False)
    config.check_transformer_memory(3, training=False, timesteps=5)
    with pytest.raises(UserError, match=r"^running the spikformer at T = 50 on batches of 3 needs about 52\.7 MiB"):
        config.check_transformer_memory(3, training=False, timesteps=50)

def test_memory_and_disk_refusals_state_the_estimate(monkeypatch, tmp_path):
    monkeypatch.setattr(resources, "available_memory", lambda: 10 * 2 ** 30)
    resources.check_memory(8 * 2 ** 30, "x", "y")  # 80 %: allowed
    with pytest.raises(UserError, match=r"^fine-tuning needs about 8\.5 GiB of memory, more than the 10\.0 GiB "
                                        r"available: lower --batch-size$"):
        resources.check_memory(8.5 * 2 ** 30, "fine-tuning", "lower --batch-size")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(resources.shutil, "disk_usage", lambda path: usage(0, 0, 5 * 2 ** 20))
    with pytest.raises(UserError, match=r"^training needs about 20\.0 MiB of disk space, but only 5\.0 MiB is free "
                                        r"on the disk of .*/new/run: free some space"):
        resources.check_disk(tmp_path / "new" / "run", 20 * 2 ** 20, "training")


def test_available_memory_is_read_from_the_system():
    available = resources.available_memory()
    assert available is not None and 2 ** 27 < available < 2 ** 44  # between 128 MiB and 16 TiB
