"""The pictures the site keeps of a cell, and the stored photograph decoded back to RGB."""

import gc
import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from classifier.errors import UnreadablePhotograph
from classifier.rendering import (
    HEATMAP_MIN_SIDE,
    cell_pictures,
    crop_thumbnail,
    decode_rgb,
    encode_png,
    heatmap_overlay,
    in_srgb,
)
from tests.colour_profiles import display_p3_profile, padded_profile, srgb_profile, swapped_primaries_profile


def photograph(height=480, width=640):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_the_thumbnail_is_the_box_with_a_margin_and_at_most_320_px():
    rgb = photograph()
    crop = crop_thumbnail(rgb, (100, 80, 220, 200))
    assert crop.shape == (156, 156, 3)  # 120 px and 15% of it on each side
    np.testing.assert_array_equal(crop, rgb[62:218, 82:238])
    assert crop_thumbnail(rgb, (0, 0, 40, 30)).shape == (34, 46, 3)  # margin only inside
    assert max(crop_thumbnail(photograph(1200, 1600), (100, 100, 900, 500)).shape[:2]) == 320


def test_the_heat_map_is_drawn_over_what_the_network_saw():
    network_input = np.full((96, 96, 3), 200, np.uint8)
    heat = np.zeros((96, 96), np.float32)
    heat[40:56, 40:56] = 1.0
    overlay = heatmap_overlay(network_input, heat)
    assert overlay.shape == (HEATMAP_MIN_SIDE, HEATMAP_MIN_SIDE, 3)
    assert (overlay[:60, :60] == 200).all()  # no attention: the cell as the network saw it
    # Full attention: JET's dark red (128, 0, 0) at 65% over the grey.
    np.testing.assert_allclose(overlay[120, 120], (153, 70, 70), atol=1)


def test_cell_pictures_are_jpeg_png_jpeg_and_the_window_lossless():
    rgb = photograph()
    window = photograph(240, 320)
    crop, window_png, overlay = cell_pictures(
        rgb, (100, 80, 220, 200), window, np.full((96, 96, 3), 128, np.uint8), np.zeros((96, 96), np.float32)
    )
    assert Image.open(io.BytesIO(crop)).format == Image.open(io.BytesIO(overlay)).format == "JPEG"
    assert Image.open(io.BytesIO(window_png)).format == "PNG"
    np.testing.assert_array_equal(decode_rgb(window_png), window)


def test_decoding_takes_bytes_or_a_file_and_gives_8_bit_rgb():
    grey = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    buffer = io.BytesIO()
    grey.save(buffer, format="PNG")
    from_bytes = decode_rgb(buffer.getvalue())
    buffer.seek(0)
    from_file = decode_rgb(buffer)
    assert from_bytes.shape == (8, 8, 3) and from_bytes.dtype == np.uint8
    np.testing.assert_array_equal(from_bytes, from_file)
    np.testing.assert_array_equal(from_bytes[..., 1], np.arange(64).reshape(8, 8))
    np.testing.assert_array_equal(decode_rgb(encode_png(photograph(8, 8))), photograph(8, 8))


@pytest.mark.parametrize("content", [b"", b"not an image at all", encode_png(photograph(64, 64))[:200]])
def test_an_undecodable_file_is_refused_in_words(content):
    with pytest.raises(UnreadablePhotograph, match="damaged or is not an image"):
        decode_rgb(content)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_16_bit_grey_photograph_is_scaled_to_8_bits_not_clipped_white(fmt):
    levels = np.array([[0, 257 * 60], [257 * 128, 65535]], dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(levels).save(buffer, format=fmt)
    rgb = decode_rgb(buffer.getvalue())
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[..., 0], [[0, 60], [128, 255]])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_transparent_pixels_are_read_as_white_background_not_their_hidden_colour():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (20, 30, 40)
    rgba[:2, :, 3] = 255  # top half opaque, bottom half transparent
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    rgb = decode_rgb(buffer.getvalue())
    assert (rgb[:2] == (20, 30, 40)).all() and (rgb[2:] == 255).all()


def test_a_photograph_too_large_to_decode_says_so(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(UnreadablePhotograph, match=r"too large to read: more than 200 pixels"):
        decode_rgb(encode_png(photograph(20, 20)))


def with_profile(picture, profile, fmt="PNG"):
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, icc_profile=profile)
    return buffer.getvalue()


def test_a_photograph_is_read_through_its_colour_profile_into_srgb():
    """A phone or camera writing Display P3 or Adobe RGB stores a stain's purple as other numbers
    than sRGB's, the space the networks learned in; read raw, every stain shifts towards grey."""
    red = Image.new("RGB", (16, 12), (255, 0, 0))
    assert (decode_rgb(with_profile(red, swapped_primaries_profile())) == (0, 0, 255)).all()


def test_a_ycbcr_tiff_is_read_through_its_colour_profile():
    """A TIFF may hold its colours as YCbCr, an encoding of the RGB its profile describes: no
    profile transforms YCbCr itself, so its colours were read raw."""
    red = Image.new("RGB", (16, 12), (255, 0, 0)).convert("YCbCr")
    rgb = decode_rgb(with_profile(red, swapped_primaries_profile(), "TIFF")).astype(int)
    assert (np.abs(rgb - (0, 0, 255)) <= 3).all()


def test_a_transparent_photograph_with_a_profile_is_flattened_on_white_in_srgb():
    picture = Image.new("RGBA", (16, 12), (255, 0, 0, 255))
    picture.paste((0, 0, 0, 0), (0, 0, 8, 12))
    rgb = decode_rgb(with_profile(picture, swapped_primaries_profile()))
    assert (rgb[:, :8] == 255).all() and (rgb[:, 8:] == (0, 0, 255)).all()


@pytest.mark.parametrize("profile", [srgb_profile(), b"no colour profile at all"], ids=["srgb", "damaged"])
def test_a_photograph_in_srgb_or_with_a_profile_that_cannot_be_used_keeps_its_numbers(profile):
    rgb = photograph(24, 32)
    np.testing.assert_array_equal(decode_rgb(with_profile(Image.fromarray(rgb), profile)), rgb)


def test_large_colour_profiles_are_read_without_being_kept():
    """Transforms are cached by the profile's bytes: sixteen files each carrying a profile of
    megabytes (a TIFF's may be as large as the upload) stayed in every process's memory."""
    tracemalloc.start()
    try:
        for fill in range(16):
            picture = Image.new("RGB", (8, 8), (200, 100, 150))
            picture.info["icc_profile"] = padded_profile(display_p3_profile(), 1 << 20, fill)
            assert in_srgb(picture) is not picture  # read through it all the same
            del picture
        gc.collect()
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept < 4 << 20
