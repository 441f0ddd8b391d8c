"""Stage 1: train the ANN to convert (VGG-16, ResNet-18, ResNet-20). See README.md for every flag.

The same command is installed as the console script snn4vision-train-ann."""
from snn4vision.cli import train_ann_main

if __name__ == "__main__":
    train_ann_main()
