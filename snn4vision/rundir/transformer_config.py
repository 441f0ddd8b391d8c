"""The shape of a directly trained spiking transformer (:class:`TransformerConfig`, saved under ``"transformer"``
in a run's ``config.json``) and the presets of ``train_spiking_transformer.py`` (:data:`TRANSFORMER_PRESETS`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .. import resources
from ..errors import UserError

#: Presets of train_spiking_transformer.py; explicit flags override them. ``"transformer"`` holds the network's
#: shape (a :class:`TransformerConfig`), the rest are TrainConfig fields.
TRANSFORMER_PRESETS = {
    # The small configuration (2 blocks, dim 256, T = 4) at 64x64 from scratch on 2 CPU cores, with a
    # third pooling so that 64x64 images give the 8x8 tokens of the reference CIFAR setting (32x32, "0011");
    # AdamW with cosine decay as the reference code, shortened; no early stopping.
    "quick": dict(image_size=64, transformer=dict(depth=2, dim=256, heads=8, timesteps=4, mlp_ratio=4,
                                                  pooling="0111"),
                  batch_size=32, epochs=12, optimizer="adamw", learning_rate=1e-3, weight_decay=0.01,
                  lr_schedule="cosine", warmup_epochs=1, augment="geometric", stop_patience=1000, kernel_l2=0.0,
                  bias_l1=0.0, batch_norm=True),
    # The reference code's CIFAR recipe (AdamW 3e-4, weight decay 0.06, cosine, 20 warm-up epochs, 300 epochs).
    "reference": dict(image_size=64, transformer=dict(depth=2, dim=256, heads=8, timesteps=4, mlp_ratio=4),
                      batch_size=64, epochs=300, optimizer="adamw", learning_rate=3e-4, weight_decay=0.06,
                      lr_schedule="cosine", warmup_epochs=20, augment="geometric", stop_patience=1000,
                      kernel_l2=0.0, bias_l1=0.0, batch_norm=True),
}


@dataclass
class TransformerConfig:
    """A Spikformer's or Spike-driven Transformer's shape: ``depth`` blocks of ``dim`` channels and ``heads``
    attention heads, an MLP ``mlp_ratio`` times wider, ``timesteps`` steps per image, and ``pooling``: four 0/1
    flags, a max pooling after each patch-splitting stage."""

    depth: int = 2
    dim: int = 256
    heads: int = 8
    timesteps: int = 4
    mlp_ratio: int = 4
    pooling: str = "0011"

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_json(cls, obj: dict) -> "TransformerConfig":
        unknown = set(obj) - set(cls.field_names())
        if unknown:
            raise UserError(f"config.json's transformer has unknown keys {sorted(unknown)}: was it written by "
                            "another version?")
        return cls(**obj)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        # in order, each check evaluated only once those before it hold (--dim's divides by --heads)
        checks = [
            (lambda: self.depth >= 1, f"--depth must be at least 1, got {self.depth}"),
            (lambda: self.heads >= 1, f"--heads must be at least 1, got {self.heads}"),
            (lambda: self.mlp_ratio >= 1, f"--mlp-ratio must be at least 1, got {self.mlp_ratio}"),
            (lambda: self.dim >= 8 and self.dim % 8 == 0 and self.dim % self.heads == 0,
             f"--dim must be a multiple of 8 and of --heads ({self.heads}), got {self.dim}"),
            (lambda: isinstance(self.pooling, str) and len(self.pooling) == 4 and set(self.pooling) <= {"0", "1"},
             f"--pooling must be four 0/1 flags such as 0011, got {self.pooling!r}"),
        ]
        for ok, message in checks:
            if not ok():
                raise UserError(message)
        resources.check_timesteps(self.timesteps)

    def memory_bytes(self, image_size: int, batch_size: int, timesteps: int, training: bool) -> int:
        """Bytes of one batch with all ``timesteps`` unrolled at once."""
        return resources.transformer_bytes(image_size, self.dim, self.depth, self.heads, self.mlp_ratio,
                                           self.pooling, batch_size, timesteps, training)
