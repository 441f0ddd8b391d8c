"""The whole pipeline: train, convert, fine-tune (relu path), energy, one summary. See README.md.

The same command is installed as the console script snn4vision-run-all."""
from snn4vision.cli import run_all_main

if __name__ == "__main__":
    run_all_main()
