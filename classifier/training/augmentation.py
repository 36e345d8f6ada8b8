"""Augmentation of training batches, as plain batched tensor ops: rotation, zoom, shift and flips;
what another lab's stain, lamp, microscope and camera do to a photograph (stain amounts in
optical density, colour, focus, sensor noise, JPEG); and mixup.

Measured on this 2-core CPU: Keras's augmentation layers cost about 200 ms per batch of 64, as
much as the training step itself; these ops cost a few ms (JPEG, one image at a time, the most).

Each photometric op takes float32 images in [0, 1] of shape (N, H, W, 3) and returns the same
shape and range, one random draw per image; ``augment_fn`` chains them as the recipe says.
"""

import numpy as np

from classifier.preparation import BACKGROUND_LEVEL, DENSITY_RATIO_RANGE, REFERENCE_RED_CELL_DENSITY

# Training crops for "cell" networks are cut from a window this much larger than the network's
# view, so shifts and zooms show real pixels instead of padding.
TRAIN_MARGIN = 1.25

# Ruifrok & Johnston 2001: the optical density per RGB channel of haematoxylin, eosin and DAB, the
# stain vectors scikit-image's rgb2hed uses. Giemsa-type stains are not H&E, but their two dyes,
# a blue (azure) and eosin, sit close to these two; DAB's vector carries the residual.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)
# The darkest value optical density is taken of: log(0) has none.
_DARKEST = 1.0 / 255.0
# NTSC YIQ: Y is luminance, I and Q the colour plane a hue turn rotates and saturation scales.
YIQ_FROM_RGB = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
)
RGB_FROM_YIQ = np.linalg.inv(YIQ_FROM_RGB).astype(np.float32)
# A slide out of focus: the detail lost by a shrink to 1/BLUR_FACTOR, blended in by a random amount.
BLUR_FACTOR = 3
JPEG_QUALITY = (40, 95)
# A window with too few red cells (a lab's tight crop of one cell) is served without stain
# normalisation. How far that leaves a channel from the reference: the normalisation's density
# ratios run 0.65-1.4 over BCCD's TRAIN photographs (blue, 5th-95th percentile) and reach 0.59 for
# PBC's red, so each channel's density is scaled by up to exp(+-0.5), 0.61-1.65x.
UNNORMALISED_SPREAD = 0.5
# The level the stain normalisation holds fixed, in [0, 1].
UNNORMALISED_LEVEL = BACKGROUND_LEVEL / 255.0
# A camera's gain past the point where the background clips: PBC's analyser clips its red
# background already (255 in 99% of its TEST photographs; BCCD's sits at ~214), so through a warmer
# camera (red x1.12) or at 1.25x the exposure its cells come out brighter in that channel than the
# white balance, reading a clipped background, can undo. The gain k lightens a channel's optical
# density by log k before the stain normalisation, by p log k after it (p its power, 0.5-1 for
# PBC's channels and BCCD's): 0.06-0.11 for those two shifts, up to 0.15 here.
CLIPPED_DENSITY = 0.15


def training_margin(recipe):
    """How much larger than the network's view the training inputs are cut (1: not at all)."""
    return TRAIN_MARGIN if (recipe.augment and recipe.input_spec.get("mode") == "cell") else 1.0


def _per_image(tf, images, low, high):
    """One uniform draw per image, shaped to broadcast over its pixels."""
    return tf.random.uniform([tf.shape(images)[0], 1, 1, 1], low, high)


def _chosen(tf, images, share):
    """True for about ``share`` of the images, one draw each."""
    return _per_image(tf, images, 0.0, 1.0) < share


def stain_jitter(tf, images, scale, shift, haematoxylin_spread=0.0):
    """Each image's haematoxylin, eosin and residual optical densities (Ruifrok-Johnston
    deconvolution) times U(1 - scale, 1 + scale) plus U(-shift, shift), back to RGB: the spread
    of stain uptake between slides and labs (Tellez et al. 2019). The haematoxylin density is
    further scaled by exp(U(-haematoxylin_spread, haematoxylin_spread))."""
    n = tf.shape(images)[0]
    density = -tf.math.log(tf.maximum(images, _DARKEST))
    stains = tf.einsum("nhwc,cs->nhws", density, tf.constant(HED_FROM_RGB))
    factor = tf.random.uniform([n, 1, 1, 3], 1.0 - scale, 1.0 + scale)
    nuclear = tf.exp(tf.random.uniform([n, 1, 1, 1], -haematoxylin_spread, haematoxylin_spread))
    factor = factor * tf.concat([nuclear, tf.ones([n, 1, 1, 2])], axis=-1)
    offset = tf.random.uniform([n, 1, 1, 3], -shift, shift)
    density = tf.einsum("nhws,sc->nhwc", stains * factor + offset, tf.constant(RGB_FROM_HED))
    return tf.clip_by_value(tf.exp(-density), 0.0, 1.0)


def stain_reference_lost(tf, images, share, spread=UNNORMALISED_SPREAD, level=UNNORMALISED_LEVEL):
    """About ``share`` of the images shown as a window without red cells is served: not
    stain-normalised (``preparation.red_cell_density`` needs red cells to read the stain from), so
    each channel's optical density against the background level is the lab's own, times
    exp(U(-spread, spread)) here; the background itself keeps its level."""
    n = tf.shape(images)[0]
    power = tf.exp(tf.random.uniform([n, 1, 1, 3], -spread, spread))
    power = tf.where(_chosen(tf, images, share), power, tf.ones_like(power))
    relative = tf.maximum(images, _DARKEST) / level
    return tf.clip_by_value(level * tf.pow(relative, power), 0.0, 1.0)


def clipped_exposure(tf, images, share, largest=CLIPPED_DENSITY, level=UNNORMALISED_LEVEL):
    """About ``share`` of the images as a camera that clips the background shows them once
    prepared: each channel, with a chance of one half, lighter by an optical density
    U(0, largest) against the background level, which it does not pass (clipped), then rescaled
    as the served stain normalisation rescales it, its red cells now read that much lighter than
    the reference they were normalised to."""
    n = tf.shape(images)[0]
    per_channel = tf.random.uniform([n, 1, 1, 3], 0.0, 1.0) < 0.5
    lightened = tf.logical_and(_chosen(tf, images, share), per_channel)
    lighter = tf.random.uniform([n, 1, 1, 3], 0.0, largest)
    density = tf.maximum(-tf.math.log(tf.maximum(images, _DARKEST) / level) - lighter, 0.0)
    reference = tf.constant(REFERENCE_RED_CELL_DENSITY)
    ratio = tf.clip_by_value(reference / tf.maximum(reference - lighter, 1e-3), *DENSITY_RATIO_RANGE)
    shown = tf.clip_by_value(level * tf.exp(-ratio * density), 0.0, 1.0)
    return tf.where(lightened, shown, images)


def colour_jitter(tf, images, gain, brightness, contrast, saturation, hue):
    """Per-channel gain (a lamp's or a camera's white balance), brightness, contrast, saturation
    and a hue turn, one draw each per image."""
    n = tf.shape(images)[0]
    images = images * tf.random.uniform([n, 1, 1, 3], 1.0 - gain, 1.0 + gain)
    images = images + _per_image(tf, images, -brightness, brightness)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    images = (images - mean) * _per_image(tf, images, 1.0 - contrast, 1.0 + contrast) + mean
    # Saturation and hue in one 3x3 matrix per image: scale and turn YIQ's colour plane.
    angle = tf.random.uniform([n], -hue, hue) * (2.0 * np.pi)
    amount = tf.random.uniform([n], 1.0 - saturation, 1.0 + saturation)
    cos, sin = tf.cos(angle) * amount, tf.sin(angle) * amount
    ones, zeros = tf.ones([n]), tf.zeros([n])
    turn = tf.reshape(
        tf.stack([ones, zeros, zeros, zeros, cos, -sin, zeros, sin, cos], axis=1), [n, 3, 3]
    )
    matrix = tf.einsum("ij,njk,kl->nil", RGB_FROM_YIQ, turn, YIQ_FROM_RGB)
    return tf.clip_by_value(tf.einsum("nhwc,ndc->nhwd", images, matrix), 0.0, 1.0)


def blur(tf, images, share, shrink=BLUR_FACTOR):
    """About ``share`` of the images blurred, each by its own amount up to the loss of detail of a
    shrink to 1/shrink and back (about a Gaussian of 1.3 px for 3): a slide or a camera a little
    out of focus. The shrink costs ~4 ms a batch of 64 at 96x96 here; a 5x5 Gaussian as two
    depthwise convolutions ~230 ms, as much as the training step."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    smaller_size = tf.cast(tf.cast(tf.stack([height, width]), tf.float32) / shrink, tf.int32)
    smaller = tf.image.resize(images, tf.maximum(smaller_size, 1), "area")
    blurred = tf.image.resize(smaller, [height, width], "bilinear")
    amount = _per_image(tf, images, 0.0, 1.0) * tf.cast(_chosen(tf, images, share), tf.float32)
    return images + amount * (blurred - images)


def noise(tf, images, largest):
    """Gaussian sensor noise, its standard deviation U(0, largest) per image."""
    spread = _per_image(tf, images, 0.0, largest)
    return tf.clip_by_value(images + tf.random.normal(tf.shape(images)) * spread, 0.0, 1.0)


def jpeg(tf, images, share):
    """About ``share`` of the images re-encoded as JPEG at a quality drawn from JPEG_QUALITY."""
    chosen = tf.random.uniform([tf.shape(images)[0]]) < share
    quality = tf.random.uniform([tf.shape(images)[0]], JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, tf.int32)

    def one(args):
        image, pick, level = args
        # adjust_jpeg_quality takes one image, not a batch; only the chosen are encoded.
        return tf.cond(pick, lambda: tf.image.adjust_jpeg_quality(image, level), lambda: image)

    return tf.map_fn(one, (images, chosen, quality), fn_output_signature=tf.float32)


def geometric_fn(tf, spec, margin, zoom_range):
    """Per-image rotation (any angle), zoom exp(U(-zoom, zoom)), shift within the margin and
    horizontal flip, cutting the network's view out of the wider training crop. Corners
    uncovered by a rotation are black, as in blood-cell-images' own copies."""
    height, width = int(spec["height"]), int(spec["width"])

    def transform(x):
        n = tf.shape(x)[0]
        in_h, in_w = tf.cast(tf.shape(x)[1], tf.float32), tf.cast(tf.shape(x)[2], tf.float32)
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
        return tf.where(_chosen(tf, x, 0.5), tf.reverse(x, axis=[2]), x)

    return transform


def augment_fn(tf, recipe, margin):
    """The recipe's augmentation of a batch of uint8 inputs and their labels: geometry, then what
    another lab's slide and camera would change, each op left out where its setting is 0."""
    geometric = geometric_fn(tf, recipe.input_spec, margin, recipe.zoom)
    r = recipe

    def augment(images, labels):
        x = geometric(tf.cast(images, tf.float32) / 255.0)
        if r.stain_scale > 0 or r.stain_shift > 0 or r.haematoxylin_spread > 0:
            x = stain_jitter(tf, x, r.stain_scale, r.stain_shift, r.haematoxylin_spread)
        if r.clipped_exposure > 0:
            x = clipped_exposure(tf, x, r.clipped_exposure)
        if r.unnormalised_stain > 0:
            x = stain_reference_lost(tf, x, r.unnormalised_stain)
        x = colour_jitter(tf, x, r.colour_jitter, r.brightness, r.contrast, r.saturation, r.hue)
        if r.blur > 0:
            x = blur(tf, x, r.blur, r.blur_shrink)
        if r.noise > 0:
            x = noise(tf, x, r.noise)
        if r.jpeg > 0:
            x = jpeg(tf, x, r.jpeg)
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
