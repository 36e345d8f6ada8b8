"""From prepared arrays to the tf.data batches Keras fits on: shuffled or drawn balanced across data
folders and classes every epoch, augmented as the recipe says, with the targets the network's head
takes."""

import numpy as np

from classifier.training.augmentation import augment_fn, mixup_fn, scale_only


def _targets(tf, task, n_classes):
    """A binary network has one sigmoid unit; the others a softmax over their classes."""

    def with_target(images, labels):
        if task == "binary":
            return images, tf.cast(tf.reshape(labels, [-1, 1]), tf.float32)
        return images, tf.one_hot(labels, n_classes)

    return with_target


def source_shares(source_names, counts, weights):
    """Each source's share of the draws: by its weight (1 where none is given), the reviewed cells
    (the source after the named ones, when there are any) by their share of the images, since
    they are a handful of cells, not a lab's worth."""
    shares = np.array([float(weights.get(name, 1.0)) for name in source_names])
    shares = shares / shares.sum() if shares.sum() > 0 else np.full(len(shares), 1.0 / len(shares))
    extra = counts[len(source_names)] if len(counts) > len(source_names) else 0
    if not extra:
        return shares
    extra_share = extra / float(np.sum(counts))
    return np.append(shares * (1.0 - extra_share), extra_share)


def sampling_probabilities(sources, labels, source_names, weights):
    """Per training image, the chance a balanced draw picks it: each source its share
    (source_shares), split equally between the classes it holds, then between their images."""
    sources, labels = np.asarray(sources), np.asarray(labels)
    counts = np.bincount(sources, minlength=len(source_names))
    shares = source_shares(source_names, counts, weights)
    probabilities = np.zeros(len(labels))
    for source, share in enumerate(shares):
        in_source = sources == source
        classes = np.unique(labels[in_source])
        for label in classes:
            members = in_source & (labels == label)
            probabilities[members] = share / len(classes) / members.sum()
    return probabilities / probabilities.sum()


def _balanced_batches(tf, arrays, recipe):
    """Each epoch as many draws as there are training images, with replacement, by
    sampling_probabilities; seeded, and different every epoch."""
    probabilities = sampling_probabilities(
        arrays.train_sources, arrays.y_train, arrays.source_names, recipe.source_weights or {}
    )
    rng = np.random.default_rng(recipe.seed)
    count, size = len(arrays.x_train), recipe.batch_size

    def epoch():
        drawn = rng.choice(count, size=count, replace=True, p=probabilities)
        for start in range(0, count, size):
            rows = np.sort(drawn[start : start + size])  # sorted: reads memory in order
            yield arrays.x_train[rows], arrays.y_train[rows]

    shape = (None, *arrays.x_train.shape[1:])
    drawn = tf.data.Dataset.from_generator(
        epoch,
        output_signature=(
            tf.TensorSpec(shape, tf.uint8),
            tf.TensorSpec((None,), tf.as_dtype(arrays.y_train.dtype)),
        ),
    )
    # A generator's length is unknown to Keras, which then warns that the data ran out at the end
    # of every epoch: say how many batches an epoch holds.
    return drawn.apply(tf.data.experimental.assert_cardinality(-(-count // size)))


def training_batches(tf, arrays, recipe):
    """Shuffled or balanced (seeded), augmented and possibly mixed-up training batches."""
    targets = _targets(tf, recipe.task, len(arrays.class_names))
    if recipe.sampling == "balanced":
        batches = _balanced_batches(tf, arrays, recipe)
    else:
        batches = tf.data.Dataset.from_tensor_slices((arrays.x_train, arrays.y_train))
        batches = batches.shuffle(len(arrays.x_train), seed=recipe.seed, reshuffle_each_iteration=True)
        batches = batches.batch(recipe.batch_size)
    if recipe.augment:
        batches = batches.map(augment_fn(tf, recipe, arrays.margin), num_parallel_calls=2)
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
