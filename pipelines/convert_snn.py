"""Stage 2: convert the trained ANN into a spiking network. See README.md for every flag.

The same command is installed as the console script snn4vision-convert-snn."""
from snn4vision.cli import convert_snn_main

if __name__ == "__main__":
    convert_snn_main()
