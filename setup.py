"""Packages of the distribution (everything else is in setup.cfg): snn4vision and its subpackages, and the
device profiles of the top-level energy/ folder installed as snn4vision.profiles."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["snn4vision", "snn4vision.*"]) + ["snn4vision.profiles"],
      package_dir={"snn4vision.profiles": "energy"})
