"""The pipeline stages, one module each, every one a function over a run directory: :mod:`.training`
(``train_ann``, ``train_spiking_transformer``), :mod:`.convert` (``convert_snn``), :mod:`.fine_tuning`
(``fine_tune``), :mod:`.energy` (``estimate_energy``), :mod:`.predict` (``predict``), :mod:`.export`
(``export_nir``) and :mod:`.report` (``write_report``).

A stage builds on the library below it (the run package :mod:`snn4vision.rundir` and the Python API among it) and
never imports another stage: each reads what the stages before it wrote to the run directory.
:mod:`snn4vision.pipeline` runs them in order and :mod:`snn4vision.cli` gives each its command.
"""
