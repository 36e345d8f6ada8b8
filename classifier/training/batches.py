"""From prepared arrays to the tf.data batches Keras fits on: shuffled every epoch, augmented as
the recipe says, with the targets the network's head takes."""

from classifier.training.augmentation import augment_fn, mixup_fn, scale_only


def _targets(tf, task, n_classes):
    """A binary network has one sigmoid unit; the others a softmax over their classes."""

    def with_target(images, labels):
        if task == "binary":
            return images, tf.cast(tf.reshape(labels, [-1, 1]), tf.float32)
        return images, tf.one_hot(labels, n_classes)

    return with_target


def training_batches(tf, arrays, recipe):
    """Shuffled (seeded), augmented and possibly mixed-up training batches."""
    targets = _targets(tf, recipe.task, len(arrays.class_names))
    batches = tf.data.Dataset.from_tensor_slices((arrays.x_train, arrays.y_train))
    batches = batches.shuffle(len(arrays.x_train), seed=recipe.seed, reshuffle_each_iteration=True)
    batches = batches.batch(recipe.batch_size)
    if recipe.augment:
        augment = augment_fn(tf, recipe.input_spec, arrays.margin, recipe.colour_jitter, recipe.zoom)
        batches = batches.map(augment, num_parallel_calls=2)
    else:
        batches = batches.map(scale_only(tf))
    batches = batches.map(targets)
    if recipe.mixup > 0:
        batches = batches.map(mixup_fn(tf, recipe.mixup))
    return batches.prefetch(2)


def validation_batches(tf, arrays, recipe):
    """The validation split as batches, or None for a refit, which has none."""
    if recipe.refit:
        return None
    return (
        tf.data.Dataset.from_tensor_slices((arrays.x_val, arrays.y_val))
        .batch(256)
        .map(scale_only(tf))
        .map(_targets(tf, recipe.task, len(arrays.class_names)))
        .prefetch(1)
    )
