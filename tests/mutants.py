"""Deliberate bugs (issues 13 and 33): plant each, run the tests named for it, restore.

Run by hand, not by pytest: ``.venv/bin/python tests/mutants.py [name ...]``. Every line should list a
failing test; NONE means the suite would not notice that bug.
"""
import pathlib
import signal
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 900  # seconds a mutant's tests may run

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
    ("BN fold drops a bias-free conv's new bias", "snn4vision/layer_graph.py",
     '        target.params["bias"] = True\n', "",
     ["tests/test_untested_behaviours.py"]),
    ("BN fold skips beta and mean without a bias", "snn4vision/layer_graph.py",
     "target.bias = ((target.bias - mean) * factor + beta)",
     'target.bias = ((target.bias - mean) * factor + beta) if target.params["bias"] else target.bias',
     ["tests/test_untested_behaviours.py"]),
    ("BN fold into depthwise per output channel", "snn4vision/layer_graph.py",
     "target.kernel * factor.reshape(shape)", "target.kernel * factor",
     ["tests/test_untested_behaviours.py"]),
    ("STE spike count at the uncompressed threshold", "snn4vision/simulation.py",
     "cell.spike_unit(threshold, dt), fired)", "cell.spike_unit(threshold * compression[name], dt), fired)",
     ["tests/test_untested_behaviours.py"]),
    ("STE clipped at the compressed threshold", "snn4vision/simulation.py",
     "drive = cell.drive(h, threshold * compression[name])", "drive = cell.drive(h, threshold)",
     ["tests/test_untested_behaviours.py"]),
    ("depthwise MACs counted as a full conv", "snn4vision/costs.py",
     "connections = _size(node.shape) * k[0] * k[1]\n",
     "connections = _size(node.shape) * k[0] * k[1] * source.shape[-1]\n",
     ["tests/test_untested_behaviours.py"]),
    ("sparsity weights use the feeding layer's fan-out", "snn4vision/costs.py",
     "for source in cost.sources:", "for source in cost.feeds:",
     ["tests/test_untested_behaviours_training.py"]),
    ("ReLU penalty without its SOP weight", "snn4vision/training.py",
     "model.add_loss(strength * weight * ", "model.add_loss(strength * ",
     ["tests/test_untested_behaviours_training.py"]),
    ("resume re-enters the ReLU warm-up", "snn4vision/training.py",
     "if warmup and start == 0:", "if warmup:",
     ["tests/test_untested_behaviours_training.py"]),
    ("resume recalibrates the thresholds", "snn4vision/training.py",
     "if warmup and epoch == config.qcfs_from_epoch:", "if warmup and epoch >= config.qcfs_from_epoch:",
     ["tests/test_untested_behaviours_training.py"]),
    ("warm-up LR one epoch late", "snn4vision/rundir.py",
     "self.learning_rate * (epoch + 1) / (self.warmup_epochs + 1)",
     "self.learning_rate * epoch / (self.warmup_epochs + 1)",
     ["tests/test_untested_behaviours_training.py"]),
    ("LR of the next epoch", "snn4vision/training.py",
     "scheduled = config.learning_rate_at(epoch)", "scheduled = config.learning_rate_at(epoch + 1)",
     ["tests/test_untested_behaviours_training.py"]),
    # issue 33: the run directory is ours or refused
    ("--overwrite moves the user's files", "snn4vision/rundir.py",
     "    refuse_foreign(run_dir, present + downstream)\n", "",
     ["tests/test_run_ownership.py"]),
    ("export --out onto the run's inputs", "snn4vision/export.py",
     "if own is not None and own != NIR_FILE and", "if False and own != NIR_FILE and",
     ["tests/test_run_ownership.py"]),
    ("run_all leaves the energy flags to the energy stage", "snn4vision/pipeline.py",
     "        check_energy_request(list(self.devices), self.energy_timesteps)\n", "",
     ["tests/test_run_ownership.py"]),
    ("run_all leaves the conversion flags to the conversion stage", "snn4vision/pipeline.py",
     "        self.convert_config().validate()\n", "",
     ["tests/test_run_ownership.py"]),
    ("run_all replaces a summary it did not write", "snn4vision/pipeline.py",
     "    unowned = [name for name in RESULTS if", "    unowned = [name for name in [] if",
     ["tests/test_run_ownership.py"]),
    ("--resume runs on the flags", "snn4vision/pipeline.py",
     "            config = recorded(config)\n", "            recorded(config)\n",
     ["tests/test_run_ownership.py"]),
    ("every flag counts as given", "snn4vision/cli.py",
     "    for action in parser._actions:\n        action.default = argparse.SUPPRESS",
     "    for action in []:\n        action.default = argparse.SUPPRESS",
     ["tests/test_run_ownership.py"]),
    ("a killed --overwrite is not undone", "snn4vision/rundir.py",
     "        recover(Path(run_dir))\n", "",
     ["tests/test_run_ownership.py"]),
    ("an empty stale/ is left", "snn4vision/rundir.py",
     "            (self.run_dir / STALE).rmdir()", "            pass",
     ["tests/test_run_ownership.py"]),
    ("mkdir failures escape", "snn4vision/rundir.py",
     "    except OSError as exc:\n        raise UserError(f\"cannot create the run directory",
     "    except KeyError as exc:\n        raise UserError(f\"cannot create the run directory",
     ["tests/test_run_ownership.py"]),
    ("a dangling --run link unnamed", "snn4vision/rundir.py",
     "        if run_dir.is_symlink() and not run_dir.exists():", "        if False:",
     ["tests/test_run_ownership.py"]),
    ("conversion keeps the old NIR export", "snn4vision/rundir.py",
     '"convert": _FINE_TUNED + _ENERGY + _SUMMARY + _EXPORTED,', '"convert": _FINE_TUNED + _ENERGY + _SUMMARY,',
     ["tests/test_run_ownership.py"]),
    ("earlier runs' results foreign", "snn4vision/pipeline.py",
     "unowned = [name for name in unowned if not _looks_like_ours(run_dir, name)]", "pass",
     ["tests/test_run_ownership.py"]),
    ("any file passes as an earlier run's", "snn4vision/pipeline.py",
     "return handle.read(len(_SIGNATURES[name])) == _SIGNATURES[name]", "return True",
     ["tests/test_run_ownership.py"]),
    # issue 33: data decoding and training flags
    ("bomb error escapes", "snn4vision/data.py",
     "except Image.DecompressionBombError as exc:", "except KeyError as exc:",
     ["tests/test_bad_data.py"]),
    ("huge images decoded", "snn4vision/data.py",
     "    _refuse_huge([(path, shape)", "    list([(path, shape)",
     ["tests/test_bad_data.py"]),
    ("pixel bound >=", "snn4vision/data.py",
     "if shape[0] * shape[1] > MAX_IMAGE_PIXELS]", "if shape[0] * shape[1] >= MAX_IMAGE_PIXELS]",
     ["tests/test_bad_data.py"]),
    ("format by extension", "snn4vision/data.py",
     "        if is_tiff(path):", "        if path.suffix.lower() in TIFF_EXTENSIONS:",
     ["tests/test_bad_data.py"]),
    ("hidden folders silent", "snn4vision/data.py",
     "    if hidden:\n        warn(", "    if False:\n        warn(",
     ["tests/test_bad_data.py"]),
    ("symlink loops skipped", "snn4vision/data.py",
     "        return exc.errno == errno.ELOOP", "        return False",
     ["tests/test_bad_data.py"]),
    ("zero test fraction", "snn4vision/rundir.py",
     "if min(split) <= 0 or not", "if min(split) < 0 or not",
     ["tests/test_bad_data.py"]),
    ("split rounds to empty", "snn4vision/data.py",
     "    empty = [name for name in SPLITS if not manifest[name]]", "    empty = []",
     ["tests/test_bad_data.py"]),
    ("seed range unchecked", "snn4vision/rundir.py",
     "(0 <= self.seed <= data.MAX_SEED,", "(True,",
     ["tests/test_bad_data.py"]),
    ("ANN memory guard off", "snn4vision/training.py",
     "        config.check_ann_memory(config.batch_size // strategy.num_replicas_in_sync)", "        pass",
     ["tests/test_bad_data.py"]),
    ("activation estimate halved", "snn4vision/resources.py",
     "return 4 * _FLOAT * batch_size * sum(", "return 2 * _FLOAT * batch_size * sum(",
     ["tests/test_bad_data.py"]),
    ("cache guard off", "snn4vision/training.py",
     "    data.check_cache_memory(sum(", "    (sum(",
     ["tests/test_bad_data.py"]),
    # issue 33: report, export, energy profiles, predict
    ("report write error not one line", "snn4vision/report_pages.py",
     '        raise write_failure(exc, out, "choose a writable --out with free space") from None',
     "        raise",
     ["tests/test_report_and_outputs.py::"
      "test_a_report_that_cannot_be_written_is_one_error_and_leaves_no_file"]),
    ("report leaves its new folder", "snn4vision/report_pages.py",
     "            shutil.rmtree(made, ignore_errors=True)", "            pass",
     ["tests/test_report_and_outputs.py::"
      "test_a_report_that_cannot_be_written_is_one_error_and_leaves_no_file"]),
    ("nir written by HDF5 on disk", "snn4vision/nir_io.py",
     "        atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))\n    except OSError as exc:",
     "        atomic_write(path, lambda tmp: nir.write(tmp, graph))\n    except ImportError as exc:",
     ["tests/test_report_and_outputs.py::"
      "test_a_nir_file_that_cannot_be_written_is_one_error_and_leaves_no_temporary_file"]),
    ("names as math text", "snn4vision/report_pages.py",
     'return str(text).replace("$", r"\\$")', "return str(text)",
     ["tests/test_report_and_outputs.py::"
      "test_names_with_math_text_are_drawn_as_plain_text"]),
    ("markdown names unescaped", "snn4vision/report_pages.py",
     'return html.escape(_MARKDOWN.sub(r"\\\\\\1", str(text)), quote=False)', "return str(text)",
     ["tests/test_report_and_outputs.py::"
      "test_markdown_shows_names_as_written_and_keeps_its_table"]),
    ("report takes the write lock", "snn4vision/report.py",
     "        with reading(Path(run_dir)):", "        with rundir.locked(Path(run_dir), create=False):",
     ["tests/test_report_and_outputs.py::"
      "test_a_read_only_run_is_reported_without_writing_to_it"]),
    ("ANN-only run refused", "snn4vision/report.py",
     "    if not any((run_dir / name).exists() for name in (rundir.SNN_CONFIG, rundir.SNN_WEIGHTS)):",
     "    if False:",
     ["tests/test_report_and_outputs.py::"
      "test_an_ann_only_run_is_reported_and_says_its_snn_is_missing"]),
    ("per-class of the first run", "snn4vision/report_pages.py",
     '    classes = list(dict.fromkeys(c for m in models for c in m["per_class_accuracy"]))',
     '    classes = list(models[0]["per_class_accuracy"])',
     ["tests/test_report_and_outputs.py::"
      "test_the_per_class_figure_uses_each_runs_own_classes"]),
    ("negative joules accepted", "snn4vision/devices.py",
     "math.isfinite(value) and value >= 0", "math.isfinite(value)",
     ["tests/test_report_and_outputs.py::"
      "test_a_bad_profile_value_is_named_with_its_file_key_and_range"]),
    ("tiny dt accepted", "snn4vision/convert.py",
     "(math.isfinite(self.dt) and MIN_DT <= self.dt <= MAX_DT,", "(True,",
     ["tests/test_report_and_outputs.py::"
      "test_a_dt_outside_the_simulators_range_is_refused_up_front"]),
    ("NaN SNN written", "snn4vision/convert.py",
     "        if not all(abs(g) <= np.finfo(np.float32).max for g in graph.gains.values()):",
     "        if False:",
     ["tests/test_report_and_outputs.py::"
      "test_a_conversion_to_a_nan_snn_writes_nothing"]),
    ("predict without progress", "snn4vision/predict.py",
     '        progress.update(len(parts), "batches")', "        pass",
     ["tests/test_report_and_outputs.py::"
      "test_a_long_prediction_prints_progress_lines"]),
    ("spikes per neuron, not per step", "snn4vision/report.py",
     "float(spikes / (size * timesteps))", "float(spikes / size)",
     ["tests/test_report_and_outputs.py::"
      "test_the_spikes_per_neuron_per_step_column_by_hand"]),
    # issue 33: cluster config and run files
    ("TF_CONFIG address without a port taken", "snn4vision/distributed.py",
     "if not host or not port.isdigit() or not 0 <= int(port) < 65536:", "if not isinstance(address, str):",
     ["tests/test_cluster_and_files.py"]),
    ("TF_CONFIG task index not checked for a number", "snn4vision/distributed.py",
     "isinstance(index, bool) or not isinstance(index, int)", "False",
     ["tests/test_cluster_and_files.py"]),
    ("a taken worker port goes unnoticed", "snn4vision/distributed.py",
     'listener.bind(("", _address(task)[1]))', 'listener.bind(("", 0))',
     ["tests/test_cluster_and_files.py"]),
    ("the wait for the workers never fails", "snn4vision/distributed.py",
     "            missing = unreachable(cluster, timeout=poll)\n", "            missing = []\n",
     ["tests/test_cluster_and_files.py"]),
    ("a waiting worker is invisible to the others", "snn4vision/distributed.py",
     "    listener.listen(64)\n", "",
     ["tests/test_cluster_and_files.py"]),
    ("run files read unchecked", "snn4vision/checkpoints.py",
     "return check_run_file(path, json.loads(", "return (lambda _, document: document)(path, json.loads(",
     ["tests/test_cluster_and_files.py"]),
    ("nested run-file keys unchecked", "snn4vision/checkpoints.py",
     'for part in key.split("."):', 'for part in key.split(".")[:1]:',
     ["tests/test_cluster_and_files.py"]),
    ("an incomplete checkpoint state read as it is", "snn4vision/checkpoints.py",
     'if not isinstance(state, dict) or _missing(state, ("step", "checkpoint")):', "if False:",
     ["tests/test_cluster_and_files.py"]),
    ("a run file that is not UTF-8 is a traceback", "snn4vision/checkpoints.py",
     "    except UnicodeDecodeError:\n", "    except KeyError:\n",
     ["tests/test_cluster_and_files.py"]),
    # --- issue 34 (distillation, more time never hurts) ---
    ("distillation without T squared", "snn4vision/training.py",
     "weight * temperature ** 2 * tf.reduce_mean(kl)", "weight * tf.reduce_mean(kl)",
     ["tests/test_distillation.py"]),
    ("distillation weight ignored", "snn4vision/training.py",
     "return (1.0 - weight) * hard(labels, logits)", "return hard(labels, logits)",
     ["tests/test_distillation.py"]),
    ("teacher is the quantised network", "snn4vision/training.py",
     "                if config.distill:  # before quantising: the teacher is the ReLU network\n"
     "                    teacher = relu_teacher(config, model, len(source.classes), checkpoints, save=True)\n"
     "                thresholds = start_quantising(model, images, seed=config.seed)\n",
     "                thresholds = start_quantising(model, images, seed=config.seed)\n"
     "                if config.distill:\n"
     "                    teacher = relu_teacher(config, model, len(source.classes), checkpoints, save=True)\n",
     ["tests/test_distillation.py"]),
    ("resumed run forgets its teacher", "snn4vision/training.py",
     "if config.distill and start > config.qcfs_from_epoch else None)", "if False else None)",
     ["tests/test_distillation.py"]),
    ("no compression above L", "snn4vision/simulation.py",
     'return levels / timesteps if self.neuron == "signed_if" and self.max_spikes > 1 else 1.0',
     "return 1.0", ["tests/test_layers.py"]),
    ("compressed T read from a longer run", "snn4vision/simulation.py",
     "return any(c != 1 for c in self.node_compression(timesteps).values())",
     "return max(self.node_compression(timesteps).values(), default=1.0) != 1", ["tests/test_layers.py"]),
    ("shorter T read from a compressed longest run", "snn4vision/convert.py",
     "prefixes = [longest] if snn.compressed(longest) else [t for t in grid if not snn.compressed(t)]",
     "prefixes = [t for t in grid if not snn.compressed(t)]",
     ["tests/pipelines/test_snn_stages.py::test_qcfs_run_converts_to_signed_if_neurons"]),
    # --- end issue 34 ---
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
            # -x: one failing test is enough to show the bug is caught; a mutant that hangs counts as caught by
            # nothing, and the source is restored whatever ends the run (a kill included, through SystemExit)
            result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                                    cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
            failed = [line.split(" ")[1].split("::")[-1] for line in result.stdout.splitlines()
                      if line.startswith("FAILED")]
        except subprocess.TimeoutExpired:
            failed = [f"(none: still running after {TIMEOUT} s)"]
        finally:
            source.write_text(text)
        print(f"{name:24} failing: {', '.join(failed) or 'NONE'}", flush=True)


def _exit_on_term(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_term)
    main(sys.argv[1:])
