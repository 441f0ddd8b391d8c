"""The losses and metrics of training: cross-entropy with label smoothing, knowledge distillation from a teacher
(``--distill``), and the accuracy of labels packed with a teacher's logits."""
from __future__ import annotations


def classification_loss(num_classes: int, label_smoothing: float = 0.0):
    """Cross-entropy on logits and integer labels, with optional label smoothing."""
    import tensorflow as tf

    if not label_smoothing:
        return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    smoothed = tf.keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)

    def loss(labels, logits):
        return smoothed(tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes), logits)

    return loss


def distillation_loss(num_classes: int, weight: float, temperature: float, label_smoothing: float = 0.0):
    """The loss of ``--distill``: ``(1 - weight) x`` the cross-entropy on the labels plus ``weight x
    temperature**2 x`` KL(teacher || student) on the logits softened by ``temperature`` (Hinton et al. 2015: the
    square keeps the soft term's gradients on the scale of the hard one's).

    ``y_true`` is either labels, ``(batch,)`` or ``(batch, 1)``, and then the loss is the plain cross-entropy
    (validation data, the ReLU warm-up), or the labels packed with the teacher's logits by :func:`with_teacher`,
    ``(batch, 1 + classes)``.
    """
    import tensorflow as tf

    hard = classification_loss(num_classes, label_smoothing)

    def loss(y_true, logits):
        if not _packed(y_true, num_classes):
            return hard(y_true, logits)
        labels, teacher = y_true[:, :1], y_true[:, 1:]
        soft = tf.nn.softmax(teacher / temperature)
        kl = tf.reduce_sum(soft * (tf.nn.log_softmax(teacher / temperature) - tf.nn.log_softmax(logits / temperature)),
                           axis=-1)
        return (1.0 - weight) * hard(labels, logits) + weight * temperature ** 2 * tf.reduce_mean(kl)

    return loss


def label_accuracy(num_classes: int):
    """The ``accuracy`` metric for labels, packed with a teacher's logits or not (see :func:`distillation_loss`)."""
    import tensorflow as tf

    def accuracy(y_true, logits):
        labels = y_true[:, :1] if _packed(y_true, num_classes) else y_true
        return tf.keras.metrics.sparse_categorical_accuracy(labels, logits)

    return accuracy


def _packed(y_true, num_classes: int) -> bool:
    # static shapes: the training batches of a distilled epoch and the plain labels trace apart
    return y_true.shape.rank == 2 and y_true.shape[-1] == 1 + num_classes


def with_teacher(batches, teacher):
    """``batches`` of (images, labels) as (images, labels packed with ``teacher``'s logits): a float column of
    the labels, then the logits. The teacher runs in tf.data's threads, beside the training step."""
    import tensorflow as tf

    def pack(x, y):
        logits = teacher(x, training=False)
        return x, tf.concat([tf.cast(tf.reshape(y, [-1, 1]), logits.dtype), logits], axis=1)

    return batches.map(pack)
