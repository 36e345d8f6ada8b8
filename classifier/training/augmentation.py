"""Augmentation of training batches: rotation, zoom, shift, flips, stain (colour) jitter, blur and
mixup, as plain batched tensor ops.

Measured on this 2-core CPU: Keras's augmentation layers cost about 200 ms per batch of 64, as
much as the training step itself; these ops cost a few ms.
"""

import numpy as np

# Training crops for "cell" networks are cut from a window this much larger than the network's
# view, so shifts and zooms show real pixels instead of padding.
TRAIN_MARGIN = 1.25


def training_margin(recipe):
    """How much larger than the network's view the training inputs are cut (1: not at all)."""
    return TRAIN_MARGIN if (recipe.augment and recipe.input_spec.get("mode") == "cell") else 1.0


def augment_fn(tf, spec, margin, colour_jitter, zoom_range):
    """Per-sample rotation (any angle), zoom, shift, flips, stain (colour) jitter and occasional
    blur as plain batched tensor ops: Keras augmentation layers cost ~200 ms/batch on this CPU,
    these a few ms. Corners uncovered by a rotation are black, as in the dataset's own copies."""
    height, width = int(spec["height"]), int(spec["width"])
    blur_kernel = tf.constant(
        np.outer([1, 2, 1], [1, 2, 1]).astype(np.float32)[:, :, None, None] / 16.0
    )
    blur_kernel = tf.tile(blur_kernel, [1, 1, 3, 1])

    def augment(images, labels):
        x = tf.cast(images, tf.float32) / 255.0
        n = tf.shape(x)[0]
        in_h = tf.cast(tf.shape(x)[1], tf.float32)
        in_w = tf.cast(tf.shape(x)[2], tf.float32)
        # Output pixel (u, v) samples the input at centre + zoom * R(angle) (u - cu, v - cv) +
        # shift; the cache holds the view at the network's resolution with a margin around it.
        angle = tf.random.uniform([n], -np.pi, np.pi)
        zoom = tf.exp(tf.random.uniform([n], -zoom_range, zoom_range))
        room = (margin - 1.0) / 2.0
        shift_x = tf.random.uniform([n], -1.0, 1.0) * room * width * 0.8
        shift_y = tf.random.uniform([n], -1.0, 1.0) * room * height * 0.8
        cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
        cu, cv = (width - 1) / 2.0, (height - 1) / 2.0
        cx, cy = (in_w - 1) / 2.0 + shift_x, (in_h - 1) / 2.0 + shift_y
        zeros = tf.zeros([n])
        transforms = tf.stack(
            [cos, -sin, cx - cos * cu + sin * cv, sin, cos, cy - sin * cu - cos * cv, zeros, zeros],
            axis=1,
        )
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x,
            transforms=transforms,
            output_shape=tf.constant([height, width]),
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )

        def maybe(p):
            return tf.random.uniform([n, 1, 1, 1]) < p

        x = tf.where(maybe(0.5), tf.reverse(x, axis=[2]), x)
        # Stain jitter: per-channel gain, brightness, contrast, saturation.
        x = x * tf.random.uniform([n, 1, 1, 3], 1.0 - colour_jitter, 1.0 + colour_jitter)
        x = x + tf.random.uniform([n, 1, 1, 1], -0.08, 0.08)
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = (x - mean) * tf.random.uniform([n, 1, 1, 1], 0.8, 1.2) + mean
        grey = tf.reduce_mean(x, axis=3, keepdims=True)
        x = (x - grey) * tf.random.uniform([n, 1, 1, 1], 0.75, 1.25) + grey
        blurred = tf.nn.depthwise_conv2d(x, blur_kernel, [1, 1, 1, 1], "SAME")
        x = tf.where(maybe(0.15), blurred, x)
        return tf.clip_by_value(x, 0.0, 1.0), labels

    return augment


def mixup_fn(tf, alpha):
    """Blend each sample (and its target) with another of the batch, weight ~ Beta(a, a)."""

    def mix(images, targets):
        n = tf.shape(images)[0]
        a = tf.random.gamma([n], alpha)
        b = tf.random.gamma([n], alpha)
        lam = tf.maximum(a / (a + b), b / (a + b))  # the sample keeps the larger share
        order = tf.random.shuffle(tf.range(n))
        lam_x = tf.reshape(lam, [-1, 1, 1, 1])
        lam_y = tf.reshape(lam, [-1, 1])
        images = lam_x * images + (1.0 - lam_x) * tf.gather(images, order)
        targets = lam_y * targets + (1.0 - lam_y) * tf.gather(targets, order)
        return images, targets

    return mix


def scale_only(tf):
    def scale(images, labels):
        return tf.cast(images, tf.float32) / 255.0, labels

    return scale
