"""Train a Spikformer or Spike-driven Transformer directly (surrogate gradients). See README.md for every flag.

The same command is installed as the console script snn4vision-train-spiking-transformer."""
from snn4vision.cli import train_spiking_transformer_main

if __name__ == "__main__":
    train_spiking_transformer_main()
