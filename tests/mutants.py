"""The seven deliberate bugs of issue 13 and seven more: plant each, run the tests named for it, restore.

Run by hand, not by pytest: ``.venv/bin/python tests/mutants.py [name ...]``. Every line should list a
failing test; NONE means the suite would not notice that bug.
"""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: (bug, file, original text, planted text, tests to run)
MUTANTS = [
    ("MAC at synop energy", "snn4vision/costs.py",
     "c.connections * device.mac + c.adds", "c.connections * device.energy_per_synop + c.adds",
     ["tests/test_energy.py"]),
    ("pooling adds dropped", "snn4vision/costs.py",
     " + c.adds * device.energy_per_synop + c.neurons", " + c.neurons",
     ["tests/test_energy.py"]),
    ("non-atomic write", "snn4vision/checkpoints.py",
     "        write(tmp)\n", "        write(path)\n        return\n",
     ["tests/test_checkpoints.py"]),
    ("clean before commit", "snn4vision/checkpoints.py",
     "            atomic_write_json(self.state_path, state)\n",
     "            self._clean(keep={name, state[\"best_weights\"]})\n            atomic_write_json(self.state_path, state)\n",
     ["tests/test_checkpoints.py"]),
    ("LIF > not >=", "snn4vision/neurons.py",
     "tf.cast(v >= 0.0, v.dtype)", "tf.cast(v > 0.0, v.dtype)",
     ["tests/test_spiking_transformers.py"]),
    ("IF > not >=", "snn4vision/neurons.py",
     "        voltage = state[0] + h\n        count = tf.cast(voltage >= threshold, voltage.dtype)",
     "        voltage = state[0] + h\n        count = tf.cast(voltage > threshold, voltage.dtype)",
     ["tests/test_layers.py"]),
    ("STE from h", "snn4vision/simulation.py",
     "spikes = _straight_through(drive, spikes)", "spikes = _straight_through(h, spikes)",
     ["tests/test_conversion.py"]),
    ("gain halved", "snn4vision/layer_graph.py",
     "gains = {n.name: float(max_rate / p)", "gains = {n.name: float(0.5 * max_rate / p)",
     ["tests/test_conversion.py"]),
    ("residual branches not rescaled", "snn4vision/layer_graph.py",
     "    if have == need:\n        return x\n", "    if True:\n        return x\n",
     ["tests/test_layer_graph.py"]),
    ("max pool gated by this step", "snn4vision/simulation.py",
     "gates[name] = gates[name] + xs[0]", "gates[name] = xs[0]",
     ["tests/test_layer_graph.py"]),
    ("BN folded into a shared conv", "snn4vision/layer_graph.py",
     "self.builder.readers[inputs[0]] > 1", "self.builder.readers[inputs[0]] > 2",
     ["tests/test_layer_graph.py"]),
    ("convert drops the edge filter", "snn4vision/convert.py",
     'test_batches = run.batches("test", config.batch_size)',
     'test_batches = data.evaluation_batches(run.decoded("test"), config.batch_size)',
     ["tests/pipelines/test_edge_inputs_and_snn4space_recipe.py"]),
    ("dt floor after the epoch only", "snn4vision/fine_tuning.py",
     "tf.keras.callbacks.LambdaCallback(on_train_batch_end=bound)",
     "tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs=None: bound(steps - 1))",
     ["tests/test_fine_tune_schedule.py"]),
    ("Sobel centre weight 1", "snn4vision/edges.py",
     "[[1, 0, -1], [2, 0, -2], [1, 0, -1]]", "[[1, 0, -1], [1, 0, -1], [1, 0, -1]]",
     ["tests/test_edges.py"]),
    ("depthwise reads the wrong input", "snn4vision/nir_io.py",
     "np.arange(cin * mult) // mult] = per_output", "np.arange(cin * mult) % cin] = per_output",
     ["tests/test_nir_io.py"]),
    ("depthwise grouped again", "snn4vision/nir_io.py",
     "padding=padding, dilation=1, groups=1, bias=bias)",
     "padding=padding, dilation=1, groups=weight.shape[1] if node.op == 'depthwise' else 1, bias=bias)",
     ["tests/test_nir_io.py"]),
    ("preset ReLU keeps the penalty", "snn4vision/rundir.py",
     'if "sparsity" not in overrides and config.activation != "qcfs":', 'if False:',
     ["tests/test_models.py"]),
    # issue 33: behaviours no test checked
    # issue 33: the run directory is ours or refused
    # issue 33: data decoding and training flags
    # issue 33: report, export, energy profiles, predict
    # issue 33: cluster config and run files
]


def main(only: list) -> None:
    for name, path, old, new, tests in MUTANTS:
        if only and not any(o in name for o in only):
            continue
        source = ROOT / path
        text = source.read_text()
        if text.count(old) != 1:
            print(f"{name:24} cannot be planted: the original text is not in {path} exactly once")
            continue
        source.write_text(text.replace(old, new))
        try:
            result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                                    cwd=ROOT, capture_output=True, text=True)
        finally:
            source.write_text(text)
        failed = [line.split(" ")[1].split("::")[-1] for line in result.stdout.splitlines()
                  if line.startswith("FAILED")]
        print(f"{name:24} failing: {', '.join(failed) or 'NONE'}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
