"""Write a run's SNN as a NIR graph for neuromorphic toolchains. See README.md for every flag.

The same command is installed as the console script snn4vision-export-nir."""
from snn4vision.cli import export_nir_main

if __name__ == "__main__":
    export_nir_main()
