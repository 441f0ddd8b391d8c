"""The backbone learning-rate factor against plain optimizers run at the scaled rate."""
import numpy as np
import pytest
import tensorflow as tf

from snn4vision.transfer import backbone_variables, with_backbone_rate


def _model(seed: int):
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((5,))
    x = tf.keras.layers.Dense(4, activation="tanh", name="body")(inputs)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="logits")(x))


def _batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 5)).astype("float32"), rng.integers(0, 3, 8)


def _train(model, optimizers, steps: int = 4) -> list:
    """``steps`` steps, each optimizer of ``[(optimizer, variables)]`` applying the gradients of its variables."""
    x, y = _batch()
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            value = loss(y, model(x))
        gradients = dict(zip(map(id, model.trainable_variables), tape.gradient(value, model.trainable_variables)))
        for optimizer, variables in optimizers:
            optimizer.apply_gradients([(gradients[id(v)], v) for v in variables])
    return [v.numpy() for v in model.trainable_variables]


@pytest.mark.parametrize("name, kwargs", [("SGD", {"momentum": 0.9}), ("Adam", {}), ("AdamW", {"weight_decay": 0.1}),
                                          ("RMSprop", {})])
@pytest.mark.parametrize("factor", [0.25, 0.0])
def test_the_backbone_trains_as_at_factor_times_the_rate(name, kwargs, factor):
    optimizer_class = getattr(tf.keras.optimizers, name)
    model = _model(1)
    initial = [v.numpy() for v in model.trainable_variables]
    assert [v.name for v in backbone_variables(model)] == ["body/kernel:0", "body/bias:0"]
    scaled = with_backbone_rate(optimizer_class)(0.05, **kwargs)
    scaled.set_backbone(backbone_variables(model), factor)
    got = _train(model, [(scaled, model.trainable_variables)])
    # reference: two plain optimizers, the head's at the rate and the body's at factor x the rate
    reference = _model(1)
    body, head = reference.trainable_variables[:2], reference.trainable_variables[2:]
    parts = [(optimizer_class(0.05, **kwargs), head)] + ([(optimizer_class(0.05 * factor, **kwargs), body)]
                                                          if factor else [])
    expected = _train(reference, parts)
    for value, wanted in zip(got, expected):
        np.testing.assert_allclose(value, wanted, rtol=0, atol=1e-6)
    if factor == 0:  # frozen means bit for bit
        assert np.array_equal(got[0], initial[0]) and np.array_equal(got[1], initial[1])
    assert np.abs(got[2] - initial[2]).max() > 1e-3  # the head did train


def test_layers_that_kept_fresh_weights_are_not_the_backbone():
    model = _model(0)
    assert [v.name for v in backbone_variables(model, ["body"])] == ["body/kernel:0", "body/bias:0"]
    assert backbone_variables(model, []) == []  # nothing copied: everything trains at the head's rate
