"""The device profiles: one TOML file per device, and README.md with the method and the source of every figure.

This folder is the top-level ``energy/`` of the repository, installed as the package ``snn4vision.profiles``
(``package_dir`` in ``setup.py``), so that an editable install reads it in place and any other install ships it
as package data. :mod:`snn4vision.devices` reads it; nothing here is code.
"""
