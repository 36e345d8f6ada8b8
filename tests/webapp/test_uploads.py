"""Uploads: every kind of bad input gets a clear reason and leaves nothing stored; good files go on."""

import io
import re
import struct
import zlib
from pathlib import Path, PurePath

import cv2
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image, PngImagePlugin, TiffImagePlugin

from classifier import dataset
from classifier.rendering import decode_rgb
from tests.colour_profiles import display_p3_profile, padded_profile, srgb_profile, swapped_primaries_profile
from tests.conftest import stored_files
from tests.webapp.lab_factories import make_version
from webapp import intake
from webapp.intake import ImageRejected, check_image
from webapp.models import Sample, SmearImage
from webapp.services import uploads
from webapp.services.uploads import create_sample_with_images


def smear_array(width=120, height=90, seed=0):
    """A colourful stand-in for a smear photograph: pink field, one purple blob."""
    rng = np.random.default_rng(seed)
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[...] = (230, 190, 200)
    rgb[height // 3 : height // 2, width // 3 : width // 2] = (110, 60, 160)
    noise = rng.integers(0, 12, size=rgb.shape, dtype=np.uint8)
    return rgb - noise


def field_array(seed=0, width=320, height=240):
    """A smear field as a camera sees it: soft-edged red cells and a nucleus, mild sensor noise."""
    rng = np.random.default_rng(seed)
    rgb = np.full((height, width, 3), (232, 215, 205), np.uint8)
    for _ in range(14):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(rgb, centre, int(rng.integers(14, 22)), (205, 130, 140), -1)
    cv2.circle(rgb, (int(rng.integers(80, width - 80)), int(rng.integers(60, height - 60))), 26,
               (110, 60, 160), -1)
    rgb = cv2.GaussianBlur(rgb, (0, 0), 2)
    return np.clip(rgb.astype(np.int16) + rng.integers(-3, 4, rgb.shape), 0, 255).astype(np.uint8)


def encoded(image, fmt, **params):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def upload(name, data, content_type="application/octet-stream"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def jpeg_bytes(**kwargs):
    return encoded(Image.fromarray(smear_array(**kwargs)), "JPEG", quality=90)


def png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_claimed_size(width, height):
    """A tiny PNG file whose header claims an enormous image: a decompression bomb's first bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + b"\x00" * 3 * 4
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(row * 4)) + png_chunk(b"IEND", b""))


def rejection(data, name="file.jpg"):
    with pytest.raises(ImageRejected) as caught:
        check_image(upload(name, data))
    return str(caught.value)


@pytest.fixture
def queued(sent_tasks):
    """What would have gone to the queues (no broker in these tests)."""
    return sent_tasks


def classify(*image_ids):
    return [("classify_image", (pk,)) for pk in image_ids]


# --- one file at a time -------------------------------------------------------------------------

def test_plain_rgb_jpeg_is_kept_byte_for_byte():
    data = jpeg_bytes()
    checked = check_image(upload("a.jpeg", data))
    assert checked.content == data
    assert checked.extension == ".jpg"
    assert (checked.width, checked.height) == (120, 90)
    assert checked.conversion_note == ""


def test_text_file_named_like_a_photograph_is_refused_by_content():
    assert "not an image" in rejection(b"accession,cells\nH1,12\n" * 20, "smear.jpg")


def test_a_heic_photograph_is_refused_naming_its_format():
    # The first box of an iPhone's HEIC file; the rest does not matter to the refusal.
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    with pytest.raises(ImageRejected, match="HEIC/HEIF photograph .* export it as JPEG or PNG"):
        check_image(upload("IMG_0042.HEIC", heic))
    with pytest.raises(ImageRejected, match="not an image Leukoscope can read"):
        check_image(upload("IMG_0042.jpg", b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64))  # an MP4


def test_empty_file_is_refused():
    assert "empty" in rejection(b"")


def test_truncated_jpeg_is_refused():
    data = jpeg_bytes(width=400, height=300)
    assert "damaged or truncated" in rejection(data[: len(data) // 2])


def test_corrupt_png_data_is_refused():
    data = bytearray(encoded(Image.fromarray(smear_array()), "PNG"))
    middle = len(data) // 2
    data[middle : middle + 40] = b"\xff" * 40  # inside IDAT: the CRC and the deflate stream break
    assert "damaged" in rejection(bytes(data), "x.png")


def test_file_over_the_byte_limit_is_refused(settings):
    settings.MAX_UPLOAD_BYTES = 1000
    message = rejection(jpeg_bytes(width=300, height=300))
    assert "limit" in message


def test_the_byte_limit_is_the_largest_file_taken_whatever_size_the_file_declares(settings):
    data = jpeg_bytes(width=300, height=300)
    settings.MAX_UPLOAD_BYTES = len(data)
    check_image(upload("at-the-limit.jpg", data))
    settings.MAX_UPLOAD_BYTES = len(data) - 1
    # Under a megabyte in kilobytes, the file's rounded up and the limit's down: never "0 MB".
    said = re.fullmatch(r"The file is (\d+) KB; the limit is (\d+) KB\.", rejection(data))
    assert said and int(said[1]) > int(said[2]) > 0
    # A declared size that lies (a client's multipart part) does not let more bytes through.
    lying = upload("lying.jpg", data)
    lying.size = 100
    with pytest.raises(ImageRejected, match=r"larger than the [1-9]\d* KB limit"):
        check_image(lying)


def test_a_file_just_over_the_byte_limit_is_not_said_to_be_its_size(settings):
    settings.MAX_UPLOAD_BYTES = 25 * 1024 * 1024
    assert rejection(b"\xff\xd8" + b"\0" * 25 * 1024 * 1024) == "The file is 25.1 MB; the limit is 25 MB."
    settings.MAX_UPLOAD_BYTES = 3 * 1024 * 1024 // 2
    assert rejection(b"\0" * (2 * 1024 * 1024)) == "The file is 2 MB; the limit is 1.5 MB."


def test_image_over_the_pixel_limit_is_refused_before_decoding(settings):
    settings.MAX_IMAGE_PIXELS = 10_000
    assert "more than" in rejection(jpeg_bytes(width=200, height=100))


@pytest.mark.parametrize(("width", "height", "over"), [(8000, 5000, False), (8000, 5001, True)])
def test_upload_and_training_refuse_a_photograph_by_one_pixel_limit(tmp_path, width, height, over):
    # Training took photographs over upload's 40 megapixels, decoding them whole. Each reads the
    # header alone (its pixels here are a few bytes: damaged, where under the limit).
    data = png_with_claimed_size(width, height)
    (tmp_path / "field.png").write_bytes(data)
    refused_by_upload = "more than the 40 megapixels limit" in rejection(data, "field.png")
    skipped_by_training = "over the 40-megapixel limit" in dataset.skipped_because(tmp_path / "field.png")
    assert refused_by_upload == skipped_by_training == over


def test_upload_and_training_give_a_photograph_at_the_colour_threshold_one_verdict(tmp_path):
    # A grey field with a faint coloured line, a little under to a little over what the colour check
    # needs once the photograph is copied at most 512 px a side: upload copied it with Pillow's
    # thumbnail, training with OpenCV, and the 26 and 28 lines were taken by training, refused by upload.
    verdicts = {}
    for strength in range(20, 36, 2):
        pixels = np.full((768, 1024, 3), 128, np.uint8)
        pixels[:, 100, 0] += strength
        path = tmp_path / f"line{strength}.png"
        Image.fromarray(pixels).save(path)
        try:
            check_image(upload(path.name, path.read_bytes()))
            taken_by_upload = True
        except ImageRejected as refused:
            assert "holds no colour" in str(refused)
            taken_by_upload = False
        verdicts[strength] = (taken_by_upload, dataset.decode_image(path) is not None)
    assert all(upload_says == training_says for upload_says, training_says in verdicts.values()), verdicts
    assert {verdict for verdict, _ in verdicts.values()} == {True, False}  # both sides of the threshold


@pytest.mark.parametrize(("width", "height"), [(320, 20), (20, 240)])
def test_a_strip_too_thin_for_a_smear_field_is_refused(width, height):
    message = rejection(jpeg_bytes(width=width, height=height))
    assert message == f"The image is only {width}x{height} pixels; a smear field is far larger."


def test_decompression_bomb_header_is_refused_without_allocating():
    # 60000 x 60000 pixels would need 10 GB decoded; the header alone must stop it.
    message = rejection(png_with_claimed_size(60_000, 60_000), "bomb.png")
    assert "pixels" in message


def test_pillows_own_bomb_warning_is_a_rejection_too(settings, monkeypatch):
    # Between Pillow's limit and twice it, Pillow only warns; that must not pass or crash.
    settings.MAX_IMAGE_PIXELS = 10**9
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)
    assert "pixels" in rejection(jpeg_bytes(width=100, height=80))


def test_multi_frame_tiff_keeps_the_first_frame():
    first, second = Image.fromarray(smear_array()), Image.fromarray(smear_array(seed=4))
    data = encoded(first, "TIFF", save_all=True, append_images=[second])
    checked = check_image(upload("stack.tif", data))
    assert "first of 2 frames" in checked.conversion_note
    assert getattr(Image.open(io.BytesIO(checked.content)), "n_frames", 1) == 1


@pytest.mark.django_db
def test_the_upload_says_which_page_of_a_multi_page_file_it_kept(client, tech, queued):
    first, second = Image.fromarray(smear_array()), Image.fromarray(smear_array(seed=4))
    third = first.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    stack = encoded(first, "TIFF", save_all=True, append_images=[second, third])
    response = client.post(reverse("lab:upload"), {"accession_number": "H26-0650", "images": [
        upload("stack.tif", stack), upload("one.jpg", jpeg_bytes())]}, follow=True)
    page = response.content.decode()
    assert ("stack.tif holds 3 pages: only the first was stored and classified. Save each field as a "
            "file of its own to have the others classified.") in page
    assert "one.jpg holds" not in page and SmearImage.objects.count() == 2
    sample = Sample.objects.get()
    more = client.post(reverse("lab:sample-add-images", args=[sample.pk]), {"images": [
        upload("scan.tif", scanner_tiff())]}, follow=True).content.decode()
    assert "scan.tif holds 3 pages: only page 2, the largest, was stored and classified." in more


def test_a_tiff_that_opens_with_a_thumbnail_keeps_its_largest_page():
    field = Image.fromarray(smear_array(width=240, height=180))
    thumbnail = field.resize((80, 60))
    data = encoded(thumbnail, "TIFF", save_all=True, append_images=[field])
    checked = check_image(upload("with-thumbnail.tif", data))
    assert (checked.width, checked.height) == (240, 180)
    assert "page 2 of 2 kept, the largest" in checked.conversion_note
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(checked.content))), np.asarray(field))



def scanner_tiff():
    """A slide scanner's layout: a thumbnail page, then two full pages."""
    field = Image.fromarray(smear_array(width=640, height=480))
    return encoded(field.resize((160, 120)), "TIFF", save_all=True, append_images=[field, field])


def test_a_multi_page_tiff_cut_short_is_refused_as_damaged():
    # verify() reads the first page alone: the full page past it failed later, out of any check.
    data = scanner_tiff()
    assert "a page of it cannot be read" in rejection(data[:len(data) // 2], "cut.tif")


@pytest.mark.django_db
def test_a_damaged_file_is_refused_alone_and_the_rest_of_its_batch_stored(client, tech, queued, monkeypatch):
    data = scanner_tiff()
    response = client.post(reverse("lab:upload"), {"accession_number": "H26-0600", "images": [
        upload("good.jpg", jpeg_bytes()), upload("cut.tif", data[:len(data) // 2])]}, follow=True)
    sample = Sample.objects.get(accession_number="H26-0600")
    assert list(sample.images.values_list("original_filename", flat=True)) == ["good.jpg"]
    assert "cut.tif was not stored: The image is damaged or truncated" in response.content.decode()

    # A damage no check foresaw (Pillow raising past them) refuses that file, not the batch.
    check = intake.check_image

    def unforeseen(uploaded):
        if uploaded.name == "odd.jpg":
            raise OSError("decoder error -2")
        return check(uploaded)

    monkeypatch.setattr(intake, "check_image", unforeseen)
    response = client.post(reverse("lab:sample-add-images", args=[sample.pk]), {"images": [
        upload("odd.jpg", jpeg_bytes(seed=1)), upload("fine.jpg", jpeg_bytes(seed=2))]}, follow=True)
    assert response.status_code == 200
    assert sorted(sample.images.values_list("original_filename", flat=True)) == ["fine.jpg", "good.jpg"]
    assert "odd.jpg was not stored: The image is damaged or truncated" in response.content.decode()


@pytest.mark.parametrize("start, kind", [
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\x00", "TIFF"), (b"RIFF\x00\x00\x00\x00WEBP", "WebP"),
    (b"\xff\xd8\xff\xe0", "JPEG")])
def test_a_damaged_header_names_the_format_the_file_starts_as(start, kind):
    garbage = np.random.default_rng(4).integers(0, 255, 300, np.uint8).tobytes()
    assert rejection(start + garbage) == f"The file starts as a {kind} image, but its header is damaged."

def test_greyscale_is_refused_with_the_clinical_reason():
    grey = Image.fromarray(smear_array()).convert("L")
    assert "greyscale" in rejection(encoded(grey, "PNG"), "grey.png")


def test_a_text_that_starts_with_bm_is_no_damaged_bmp():
    assert rejection(b"BMW service report, 2026\n" * 20, "notes.bmp") == (
        "This is not an image Leukoscope can read (JPEG, PNG, TIFF, BMP or WebP expected).")


def test_a_grey_photograph_saved_as_colour_is_refused_but_a_small_field_on_white_is_not():
    grey = Image.fromarray(smear_array(640, 480)).convert("L").convert("RGB")
    assert "holds no colour" in rejection(encoded(grey, "JPEG", quality=90), "grey-as-rgb.jpg")
    # A scan whose stained field fills under 1% of a wide white page still holds the stain's colour.
    page = np.full((3000, 3000, 3), 250, np.uint8)
    page[1000:1240, 1000:1320] = smear_array(320, 240)
    checked = check_image(upload("page.png", encoded(Image.fromarray(page), "PNG")))
    assert (checked.width, checked.height) == (3000, 3000)


def test_sixteen_bit_greyscale_is_refused():
    grey16 = Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    assert "greyscale" in rejection(encoded(grey16, "PNG"), "g16.png")


def test_sixteen_bit_rgb_is_reduced_to_eight_bit(tmp_path):
    import cv2

    rgb16 = smear_array().astype(np.uint16) * 257
    path = tmp_path / "rgb16.png"
    cv2.imwrite(str(path), rgb16[..., ::-1])
    checked = check_image(upload("rgb16.png", path.read_bytes()))
    assert "16-bit" in checked.conversion_note
    stored = Image.open(io.BytesIO(checked.content))
    assert stored.mode == "RGB" and stored.format == "PNG"


def test_rgba_is_flattened_to_rgb():
    rgba = Image.fromarray(smear_array()).convert("RGBA")
    checked = check_image(upload("alpha.png", encoded(rgba, "PNG")))
    assert "transparency" in checked.conversion_note
    assert Image.open(io.BytesIO(checked.content)).mode == "RGB"


def test_cmyk_jpeg_is_converted_to_rgb():
    cmyk = Image.fromarray(smear_array()).convert("CMYK")
    checked = check_image(upload("print.jpg", encoded(cmyk, "JPEG")))
    assert "CMYK" in checked.conversion_note
    assert Image.open(io.BytesIO(checked.content)).mode == "RGB"


def test_palette_image_is_expanded_to_rgb():
    palette = Image.fromarray(smear_array()).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    checked = check_image(upload("pal.png", encoded(palette, "PNG")))
    assert "palette" in checked.conversion_note
    assert Image.open(io.BytesIO(checked.content)).mode == "RGB"


def test_a_palette_colour_marked_transparent_is_flattened_on_white():
    pixels = smear_array()
    palette = Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    indices = np.asarray(palette)
    hidden = int(indices[0, 0])
    palette.info["transparency"] = hidden
    checked = check_image(upload("pal.png", encoded(palette, "PNG")))
    assert checked.conversion_note.endswith(": palette colours expanded, transparency removed")
    stored = np.asarray(Image.open(io.BytesIO(checked.content)))
    assert (stored[indices == hidden] == 255).all()
    assert not (stored[indices != hidden] == 255).all()


def test_exif_rotated_photograph_is_stored_upright():
    image = Image.fromarray(smear_array(width=120, height=90))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    checked = check_image(upload("phone.jpg", encoded(image, "JPEG", exif=exif)))
    assert (checked.width, checked.height) == (90, 120)
    assert "EXIF" in checked.conversion_note


def turned_phone_photograph(profile):
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(Image.new("RGB", (120, 90), (255, 0, 0)), "JPEG", exif=exif, quality=95,
                   icc_profile=profile)


def half_transparent_photograph(profile):
    picture = Image.new("RGBA", (120, 90), (255, 0, 0, 255))
    picture.paste((0, 0, 0, 0), (0, 0, 60, 90))
    return encoded(picture, "PNG", icc_profile=profile)


@pytest.mark.parametrize("make", [turned_phone_photograph, half_transparent_photograph])
def test_a_photograph_stored_again_keeps_its_colours_from_its_profile(make):
    """Stored again as a PNG (turned upright, flattened on white), a photograph kept its camera's
    colour profile only as long as nothing was drawn anew: flattened, its stain colours were read
    without it. The stored pixels are sRGB now, as the classifier reads them."""
    checked = check_image(upload("camera.png", make(swapped_primaries_profile())))
    assert "colours brought to sRGB from its colour profile" in checked.conversion_note
    stored = Image.open(io.BytesIO(checked.content))
    assert stored.format == "PNG" and (stored.width, stored.height) in ((90, 120), (120, 90))
    read = decode_rgb(checked.content).astype(int)
    cell = read[-10:, -10:]  # the opaque corner, turned or not
    assert (abs(cell - (0, 0, 255)) <= 3).all()
    assert (abs(np.asarray(stored.convert("RGB"))[-10:, -10:].astype(int) - (0, 0, 255)) <= 3).all()


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_a_cmyk_photograph_with_an_rgb_profile_is_stored_as_its_colours_were_read(fmt):
    """An RGB profile cannot be read into a CMYK picture, so its colours are converted without it;
    carried over onto the stored RGB PNG, the profile was then applied to them by the worker."""
    cmyk = Image.fromarray(smear_array()).convert("CMYK")
    data = encoded(cmyk, fmt, icc_profile=swapped_primaries_profile())
    checked = check_image(upload("scan.tif", data))
    assert "CMYK" in checked.conversion_note and "sRGB" not in checked.conversion_note
    assert "icc_profile" not in Image.open(io.BytesIO(checked.content)).info
    np.testing.assert_array_equal(decode_rgb(checked.content), decode_rgb(data))


@pytest.mark.parametrize(("profile", "said"), [
    (swapped_primaries_profile(),
     "colours brought to sRGB from its colour profile, palette colours expanded"),
    (srgb_profile(), "palette colours expanded"),
    (b"no colour profile at all", "palette colours expanded"),
], ids=["wide", "srgb", "damaged"])
def test_a_palette_photograph_with_a_profile_is_noted_for_what_was_done(profile, said):
    """A palette without transparency was noted "transparency removed", and one whose profile
    changed nothing "colours brought to sRGB": a card that says what was not done."""
    palette = Image.fromarray(smear_array()).quantize(16)
    checked = check_image(upload("palette.png", encoded(palette, "PNG", icc_profile=profile)))
    assert checked.conversion_note == f"PNG stored as 8-bit RGB PNG: {said}"


def with_profile_chunk(png, payload):
    """``png`` with an iCCP chunk of ``payload`` (name, method, compressed profile) after IHDR."""
    after_header = 8 + 25
    return png[:after_header] + png_chunk(b"iCCP", payload) + png[after_header:]


@pytest.mark.parametrize("payload", [
    b"camera\0\0" + zlib.compress(padded_profile(display_p3_profile(), 1 << 20)),
    b"camera\0\1" + zlib.compress(display_p3_profile()),
], ids=["over-1-MB", "unknown-compression"])
def test_a_png_whose_colour_profile_pillow_refuses_is_stored_without_it(payload):
    """Pillow will not read a PNG profile of over 1 MB, or one compressed by an unknown method, and
    refuses the whole file: it was called damaged, though OpenCV and browsers show it."""
    pixels = smear_array()
    png = with_profile_chunk(encoded(Image.fromarray(pixels), "PNG"), payload)
    checked = check_image(upload("scan.png", png))
    assert checked.conversion_note == "PNG stored as 8-bit RGB PNG: its colour profile left out, unreadable"
    np.testing.assert_array_equal(decode_rgb(checked.content), pixels)


def test_a_tiff_page_without_a_profile_is_not_read_through_another_pages(tmp_path):
    """A scanner's TIFF may open with a thumbnail that carries a profile, and the page kept carry
    none: Pillow leaves the thumbnail's profile in the page's info."""
    pixels = smear_array()
    path = tmp_path / "scan.tif"
    with open(path, "w+b") as handle, TiffImagePlugin.AppendingTiffWriter(handle) as pages:
        thumbnail = Image.fromarray(pixels[:40, :40].copy())
        thumbnail.save(pages, format="TIFF", icc_profile=swapped_primaries_profile())
        pages.newFrame()
        Image.fromarray(pixels).save(pages, format="TIFF")
        pages.newFrame()
    checked = check_image(upload("scan.tif", path.read_bytes()))
    assert checked.page_kept == 1 and "sRGB" not in checked.conversion_note
    np.testing.assert_array_equal(decode_rgb(checked.content), pixels)


def test_a_photograph_kept_as_sent_keeps_its_colour_profile():
    data = encoded(Image.fromarray(smear_array()), "JPEG", icc_profile=swapped_primaries_profile())
    checked = check_image(upload("camera.jpg", data))
    assert checked.conversion_note == ""
    assert Image.open(io.BytesIO(checked.content)).info["icc_profile"] == swapped_primaries_profile()


@pytest.mark.parametrize("orientation", [0, 1, 9, 65535])
def test_an_exif_orientation_that_turns_nothing_is_neither_applied_nor_mentioned(orientation):
    image = Image.fromarray(smear_array(width=120, height=90))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(image, "JPEG", exif=exif)
    checked = check_image(upload("odd.jpg", data))
    assert (checked.width, checked.height) == (120, 90)
    # Kept as it came, its pixels byte for byte, without the EXIF that said nothing of turning.
    assert checked.conversion_note == "" and checked.content == intake.without_metadata(data, "JPEG")
    assert b"Exif" in data and b"Exif" not in checked.content


# --- batches ------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_one_bad_file_does_not_sink_the_batch(queued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = create_sample_with_images(
            "H26-0001", "", [upload("good.jpg", jpeg_bytes()), upload("bad.jpg", b"nope"),
                             upload("good2.jpg", jpeg_bytes(seed=3))],
        )
    assert [item.name for item in result.rejected] == ["bad.jpg"]
    assert len(result.stored) == 2
    images = list(result.sample.images.all())
    assert [image.original_filename for image in images] == ["good.jpg", "good2.jpg"]
    assert all(Path(image.image.path).is_file() for image in images)
    assert all(image.status == SmearImage.Status.QUEUED and len(image.checksum) == 64 for image in images)
    assert queued == classify(*[image.pk for image in images])


@pytest.mark.django_db
def test_long_names_with_dots_and_any_script_are_stored_under_a_name_that_fits(queued):
    # Storage reads all after a name's first dot as its extension and could not shorten this one:
    # the whole batch failed with a 400, the good photograph with it.
    names = ["Smear_v1.2_Wright-Giemsa_100x-oil_field-017_sample-H26-004512_camera-A_lab-north_2026-12-05"
             ".jpg", "\u0639\u064a\u0646\u0629 \u200f" * 12 + ".jpg_copy.jpg", "ok.jpg", ".jpg",
             "\u200f\u200f.jpg"]
    result = create_sample_with_images(
        "H26-0003", "", [upload(name, jpeg_bytes(seed=k)) for k, name in enumerate(names)])
    assert not result.rejected and len(result.stored) == len(names)
    images = list(result.sample.images.order_by("pk"))
    assert [image.original_filename for image in images] == names
    for image in images:
        stored = PurePath(image.image.name)
        assert len(image.image.name) <= SmearImage._meta.get_field("image").max_length
        assert stored.suffix == ".jpg" and "." not in stored.stem and Path(image.image.path).is_file()
    # The same long name again is stored beside the first, not over it.
    again = create_sample_with_images("H26-0004", "", [upload(names[0], jpeg_bytes(seed=9))])
    assert again.stored[0].image.name != images[0].image.name
    assert len(again.stored[0].image.name) <= 100


@pytest.mark.django_db
def test_nothing_is_stored_when_every_file_is_bad(queued, isolated_media_root):
    before = stored_files(isolated_media_root)
    result = create_sample_with_images("H26-0002", "", [upload("a.jpg", b""), upload("b.png", b"GIF89a")])
    assert result.sample is None and len(result.rejected) == 2
    assert not Sample.objects.exists()
    assert stored_files(isolated_media_root) == before
    assert queued == []


@pytest.mark.django_db
def test_a_failed_database_write_removes_the_files_already_written(queued, monkeypatch, isolated_media_root):
    before = stored_files(isolated_media_root)
    original_save = SmearImage.save
    calls = []

    def failing_save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return original_save(self, *args, **kwargs)

    monkeypatch.setattr(SmearImage, "save", failing_save)
    with pytest.raises(RuntimeError):
        files = [upload("a.jpg", jpeg_bytes()), upload("b.jpg", jpeg_bytes(seed=9))]
        create_sample_with_images("H26-0003", "", files)
    assert not Sample.objects.exists()
    assert stored_files(isolated_media_root) == before


# --- the page -----------------------------------------------------------------------------------

@pytest.mark.django_db
def test_upload_page_renders_the_drop_zone(client, tech):
    response = client.get(reverse("lab:upload"))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="dropzone"' in body and "multiple" in body and "upload.js" in body
    assert "patient" in body.lower()  # the warning not to enter patient details


@pytest.mark.django_db
def test_upload_page_stores_good_files_and_lists_rejected_ones(client, tech, queued,
                                                               django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("lab:upload"), {
            "accession_number": "H26-0100",
            "note": "Wright-Giemsa",
            "images": [upload("smear.jpg", jpeg_bytes()), upload("notes.jpg", b"hello"),
                       upload("e.png", b"")],
        }, follow=True)
    assert response.status_code == 200
    sample = Sample.objects.get()
    assert sample.created_by == tech and sample.note == "Wright-Giemsa"
    assert response.redirect_chain[-1][0] == reverse("lab:sample-detail", args=[sample.pk])
    body = response.content.decode()
    assert "notes.jpg was not stored" in body and "not an image" in body
    assert "e.png was not stored" in body and "empty" in body
    assert queued == classify(sample.images.get().pk)


@pytest.mark.django_db
def test_upload_page_with_only_bad_files_stores_nothing_and_says_why(client, tech, queued):
    response = client.post(reverse("lab:upload"), {
        "accession_number": "H26-0101", "images": [upload("x.jpg", b"\xff\xd8\xff\xe0garbage")],
    })
    assert response.status_code == 400
    body = response.content.decode()
    assert "nothing was saved" in body and "x.jpg" in body
    assert not Sample.objects.exists()
    assert "Traceback" not in body


@pytest.mark.django_db
@pytest.mark.parametrize("accession", ["", "Doe, John <script>"])
def test_upload_form_requires_a_plain_accession_number(client, tech, queued, accession):
    response = client.post(reverse("lab:upload"), {
        "accession_number": accession, "images": [upload("s.jpg", jpeg_bytes())],
    })
    assert response.status_code == 400
    assert not Sample.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("sent, kept", [
    ({"photographs": "one_cell_each"}, Sample.Photographs.ONE_CELL_EACH),
    ({"photographs": "smear_fields"}, Sample.Photographs.SMEAR_FIELDS),
    # A script that posts the form as it was before the choice existed uploads fields, as before.
    ({}, Sample.Photographs.SMEAR_FIELDS),
])
def test_the_upload_says_what_its_photographs_show(client, tech, queued, sent, kept):
    form = client.get(reverse("lab:upload")).content.decode()
    assert 'name="photographs" value="smear_fields" id="id_photographs_0" checked>' in form
    response = client.post(reverse("lab:upload"), {
        "accession_number": "H26-0110", "images": [upload("s.jpg", jpeg_bytes())], **sent,
    })
    assert response.status_code == 302
    assert Sample.objects.get().photographs == kept


@pytest.mark.django_db
def test_an_unknown_kind_of_photograph_is_refused_with_the_choices_kept(client, tech, queued):
    response = client.post(reverse("lab:upload"), {
        "accession_number": "H26-0111", "images": [upload("s.jpg", jpeg_bytes())], "photographs": "slides",
    })
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert not Sample.objects.exists()


@pytest.mark.django_db
def test_upload_without_files_asks_for_one(client, tech):
    response = client.post(reverse("lab:upload"), {"accession_number": "H1"})
    assert response.status_code == 400
    assert "at least one" in response.content.decode()


@pytest.mark.django_db
def test_upload_needs_csrf(tech, django_user_model):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(tech)
    data = {"accession_number": "H1", "images": [upload("s.jpg", b"x")]}
    response = strict.post(reverse("lab:upload"), data)
    assert response.status_code == 403


@pytest.mark.django_db
def test_the_same_photograph_twice_is_counted_once(queued):
    data = jpeg_bytes()
    result = create_sample_with_images("H26-0200", "", [upload("a.jpg", data), upload("copy.jpg", data)])
    assert [image.original_filename for image in result.stored] == ["a.jpg"]
    assert result.rejected[0].name == "copy.jpg" and "same photograph as a.jpg" in result.rejected[0].reason
    again = uploads.add_images_to_sample(result.sample, [upload("again.jpg", data),
                                                         upload("new.jpg", jpeg_bytes(seed=5))])
    assert [image.original_filename for image in again.stored] == ["new.jpg"]
    assert "same photograph as a.jpg" in again.rejected[0].reason
    assert result.rejected[0].reason.endswith("), earlier in this upload; it is counted once.")
    assert again.rejected[0].reason.endswith("), already in this sample; it is counted once.")
    # The same file again, under its own name: said so, not "the same photograph as" itself.
    same_name = uploads.add_images_to_sample(result.sample, [upload("a.jpg", data)])
    assert same_name.rejected[0].reason == "This photograph is already in this sample; it is counted once."
    twice = create_sample_with_images("H26-0299", "", [upload("b.jpg", data), upload("b.jpg", data)])
    assert twice.rejected[0].reason == "This photograph was sent twice in this upload; it is counted once."


@pytest.mark.django_db
def test_the_same_field_in_another_file_format_or_orientation_flag_is_counted_once(queued):
    jpeg = encoded(Image.fromarray(field_array()), "JPEG", quality=95)
    as_png = encoded(Image.open(io.BytesIO(jpeg)), "PNG")
    resaved = encoded(Image.open(io.BytesIO(jpeg)), "JPEG", quality=80)
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees to be upright": the pixels stored turned the other way
    turned = encoded(Image.open(io.BytesIO(jpeg)).transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95,
                     exif=exif.tobytes())
    result = create_sample_with_images("H26-0201", "", [upload("field.jpg", jpeg),
                                                        upload("field.png", as_png)])
    assert [image.original_filename for image in result.stored] == ["field.jpg"]
    assert "same photograph as field.jpg" in result.rejected[0].reason
    again = uploads.add_images_to_sample(result.sample, [upload("resaved.jpg", resaved),
                                                         upload("turned.jpg", turned),
                                                         upload("other.jpg", encoded(Image.fromarray(
                                                             field_array(seed=3)), "JPEG"))])
    assert [image.original_filename for image in again.stored] == ["other.jpg"]
    assert [item.name for item in again.rejected] == ["resaved.jpg", "turned.jpg"]
    assert all("same photograph as field.jpg" in item.reason for item in again.rejected)


@pytest.mark.django_db
def test_blank_and_overexposed_photographs_are_no_copies_of_one_another(queued):
    from webapp.intake import oriented_fingerprints

    blank = Image.new("RGB", (320, 240), (120, 60, 90))
    # Two different fields at 2.2x their exposure: clipped white but for their darkest parts.
    glaring = [Image.fromarray(np.clip(field_array(seed=seed).astype(np.float32) * 2.2, 0, 255)
                               .astype(np.uint8)) for seed in (21, 22)]
    assert oriented_fingerprints(blank) == ("", ()) and oriented_fingerprints(glaring[0]) == ("", ())
    result = create_sample_with_images("H26-0212", "", [
        upload("blank.png", encoded(blank, "PNG")),
        *(upload(f"glaring-{number}.png", encoded(image, "PNG")) for number, image in enumerate(glaring)),
    ])
    assert result.rejected == [] and len(result.stored) == 3
    # Nor of another sample's: no false "check that it belongs to this patient".
    other_blank = Image.new("RGB", (320, 240), (150, 90, 120))
    again = create_sample_with_images("H26-0213", "", [upload("blank.png", encoded(other_blank, "PNG"))])
    from webapp.selectors import photographs_held_elsewhere

    assert again.rejected == [] and photographs_held_elsewhere(again.sample) == {}
    # The same file is still the same photograph.
    twice = uploads.add_images_to_sample(again.sample, [upload("copy.png", encoded(other_blank, "PNG"))])
    assert twice.stored == [] and "same photograph as blank.png" in twice.rejected[0].reason


def test_the_turned_fingerprints_are_those_of_the_turned_photograph():
    from webapp.intake import (
        SAME_FIELD_MAX_DIFFERENCE,
        fingerprint,
        fingerprint_difference,
        oriented_fingerprints,
    )

    image = Image.fromarray(field_array(seed=4, width=331, height=217))  # no side a multiple of 17
    upright, turned = oriented_fingerprints(image)
    turns = Image.Transpose
    in_their_order = [turns.ROTATE_180, turns.FLIP_LEFT_RIGHT, turns.FLIP_TOP_BOTTOM, turns.TRANSPOSE,
                      turns.TRANSVERSE, turns.ROTATE_270, turns.ROTATE_90]
    assert upright == fingerprint(image)
    # Rounding may tip a near-tie step of a flat background: a few of 256, never near the threshold.
    differences = [fingerprint_difference(fingerprint(image.transpose(turn)), mine)
                   for turn, mine in zip(in_their_order, turned, strict=True)]
    assert max(differences) <= 4 < SAME_FIELD_MAX_DIFFERENCE
    assert min(fingerprint_difference(upright, mine) for mine in turned) > SAME_FIELD_MAX_DIFFERENCE


@pytest.mark.django_db
def test_a_copy_whose_pixels_were_turned_or_mirrored_is_counted_once(queued):
    field = Image.fromarray(field_array(seed=6))
    first = upload("field.jpg", encoded(field, "JPEG", quality=95))
    result = create_sample_with_images("H26-0206", "", [first])
    half_turned = encoded(field.transpose(Image.Transpose.ROTATE_180), "JPEG", quality=85)
    mirrored = encoded(field.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG")
    quarter_turned = encoded(field.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=90)
    other = encoded(Image.fromarray(field_array(seed=7)), "JPEG")

    again = uploads.add_images_to_sample(result.sample, [
        upload("half.jpg", half_turned), upload("mirror.png", mirrored),
        upload("quarter.jpg", quarter_turned), upload("other.jpg", other),
    ])

    assert [image.original_filename for image in again.stored] == ["other.jpg"]
    assert [item.name for item in again.rejected] == ["half.jpg", "mirror.png", "quarter.jpg"]
    assert all("same photograph as field.jpg (the same field, whatever its file format or orientation)"
               in item.reason for item in again.rejected)
    assert result.sample.images.count() == 2


@pytest.mark.django_db
def test_a_photograph_stored_by_another_upload_while_the_files_were_read_is_refused(queued, monkeypatch):
    sample = create_sample_with_images("H26-0202", "", [upload("a.jpg", jpeg_bytes())]).sample
    data = jpeg_bytes(seed=8)
    check_files = uploads.check_files

    def read_while_another_upload_lands(files, *known):
        checked = check_files(files, *known)
        uploads.add_images(sample, checked[0])  # the other upload of the same file, stored first
        return checked

    monkeypatch.setattr(uploads, "check_files", read_while_another_upload_lands)
    result = uploads.add_images_to_sample(sample, [upload("b.jpg", data)])
    assert result.stored == [] and result.rejected[0].reason == (
        "This photograph is already in this sample; it is counted once.")
    assert sample.images.filter(original_filename="b.jpg").count() == 1


@pytest.mark.django_db
def test_a_photograph_another_sample_holds_is_stored_with_a_warning(client, tech, queued):
    data = jpeg_bytes(seed=9)
    create_sample_with_images("H26-0203", "", [upload("field.jpg", data)])
    as_png = encoded(Image.open(io.BytesIO(data)), "PNG")
    response = client.post(reverse("lab:upload"), {"accession_number": "H26-0204",
                                                   "images": [upload("field.png", as_png)]}, follow=True)
    body = response.content.decode()
    assert Sample.objects.get(accession_number="H26-0204").images.count() == 1
    assert ("field.png is the same photograph as one in sample H26-0203: check that it belongs to this "
            "patient.") in body
    # Said on the page for as long as it is so, not only as the upload's message.
    second = Sample.objects.get(accession_number="H26-0204")
    later = client.get(reverse("lab:sample-detail", args=[second.pk]))
    assert ('<li data-role="held-elsewhere">The same photograph is in sample H26-0203: check that it belongs '
            "to this patient.</li>") in later.content.decode()
    # And beside the sign form, where a hematologist signs the whole sample's result.
    assert ('<div class="warning" data-role="also-elsewhere">1 photograph is also in sample H26-0203: check '
            "that it belongs to this patient before signing") in later.content.decode()


def test_many_photographs_held_elsewhere_are_warned_of_in_one_line(client, tech, queued):
    # The reliability audit: 150 smears already in other samples gave 150 warnings (226 KB of page).
    data = [jpeg_bytes(seed=seed) for seed in range(40, 45)]
    for number, chunk in (("H26-0601", data[:2]), ("H26-0602", data[2:4]), ("H26-0603", data[4:]),
                          ("H26-0604", data[4:])):
        files = [upload(f"{number}-{n}.jpg", one) for n, one in enumerate(chunk)]
        create_sample_with_images(number, "", files)
    copies = [upload(f"copy-{n}.jpg", one) for n, one in enumerate(data)]
    response = client.post(reverse("lab:upload"), {"accession_number": "H26-0610", "images": copies},
                           follow=True)
    body = response.content.decode()
    assert Sample.objects.get(accession_number="H26-0610").images.count() == 5
    assert ("5 of these photographs are the same as ones in 4 other samples (H26-0601, H26-0602, H26-0603 "
            "and 1 other): check that they belong to this patient. Each one&#x27;s card names its "
            "sample.") in body
    assert "is the same photograph as one in sample" not in body


def test_fingerprints_of_one_field_always_share_a_band():
    """What lets an index find another sample's copy: any two fingerprints a copy can differ by
    (up to SAME_FIELD_MAX_DIFFERENCE steps) agree on a whole band; unrelated ones rarely do."""
    from webapp.intake import SAME_FIELD_MAX_DIFFERENCE, fingerprint_bands

    rng = np.random.default_rng(19)
    shared_by_strangers = 0
    for _ in range(2000):
        bits = rng.integers(0, 2, 256)
        copy = bits.copy()
        copy[rng.choice(256, SAME_FIELD_MAX_DIFFERENCE, replace=False)] ^= 1
        stranger = rng.integers(0, 2, 256)
        original, copied, other = (f"{int(''.join(map(str, row)), 2):064x}" for row in (bits, copy, stranger))
        assert set(fingerprint_bands(original)) & set(fingerprint_bands(copied))
        shared_by_strangers += bool(set(fingerprint_bands(original)) & set(fingerprint_bands(other)))
    assert shared_by_strangers < 20


@pytest.mark.django_db
def test_another_samples_photograph_turned_and_re_encoded_is_stored_with_a_warning(client, tech, queued):
    from webapp.intake import fingerprint_difference

    field = Image.fromarray(field_array(seed=14, width=480, height=360))
    create_sample_with_images("H26-0207", "", [upload("field.png", encoded(field, "PNG"))])
    # Turned a quarter, a border of 4 pixels trimmed, saved as a small JPEG: its fingerprint is
    # none of the original's eight (9 of 256 steps from the nearest), as a copy's often is not.
    turned = field.transpose(Image.Transpose.ROTATE_90)
    copy = turned.crop((4, 4, turned.width - 4, turned.height - 4))
    other = encoded(Image.fromarray(field_array(seed=15, width=480, height=360)), "JPEG")
    response = client.post(reverse("lab:upload"), {
        "accession_number": "H26-0208",
        "images": [upload("copy.jpg", encoded(copy, "JPEG", quality=60)), upload("other.jpg", other)],
    }, follow=True)

    body = response.content.decode()
    assert "copy.jpg is the same photograph as one in sample H26-0207" in body
    assert "other.jpg is the same photograph" not in body
    stored = {image.original_filename: image for image in SmearImage.objects.all()}
    assert min(fingerprint_difference(print_, stored["copy.jpg"].fingerprint)
               for print_ in (stored["field.png"].fingerprint, *stored["field.png"].turned_fingerprints)) > 0
    # Both samples say so on their pages, the older one too.
    first, second = (Sample.objects.get(accession_number=number) for number in ("H26-0207", "H26-0208"))
    assert ('<li data-role="held-elsewhere">The same photograph is in sample H26-0208'
            in client.get(reverse("lab:sample-detail", args=[first.pk])).content.decode())
    page = client.get(reverse("lab:sample-detail", args=[second.pk])).content.decode()
    assert page.count('data-role="held-elsewhere"') == 1 and "in sample H26-0207" in page


@pytest.mark.django_db
def test_the_search_for_copies_in_other_samples_reads_the_band_index(queued):
    """A lab holds tens of thousands of photographs: the search must look up their bands, not
    read each one."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from webapp.selectors import photographs_held_elsewhere

    create_sample_with_images("H26-0211", "", [upload("a.jpg", jpeg_bytes(seed=18))])
    sample = create_sample_with_images("H26-0212", "", [upload("b.jpg", jpeg_bytes(seed=19))]).sample
    with CaptureQueriesContext(connection) as queries:
        photographs_held_elsewhere(sample)
    (search,) = [query["sql"] for query in queries.captured_queries if "fingerprintband" in query["sql"]]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")  # tiny tables: ask whether it can
            cursor.execute(f"EXPLAIN {search}")
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {search}")
        plan = "\n".join(" ".join(map(str, row)) for row in cursor.fetchall())
    assert "webapp_fingerprintband_key" in plan, plan


@pytest.mark.django_db
def test_photographs_stored_before_bands_get_them_from_their_files(client, tech, queued):
    """Migration 0017: a photograph stored before 0016 had no bands or turned fingerprints, so a
    turned copy in another sample went unwarned; it gets them from its file, and a photograph
    whose file is gone the bands of the fingerprint it has."""
    import importlib

    from django.apps import apps

    from webapp.models import FingerprintBand

    migration = importlib.import_module("webapp.migrations.0017_index_stored_fingerprints")
    field = Image.fromarray(field_array(seed=16))
    sample = create_sample_with_images("H26-0209", "", [upload("old.jpg", encoded(field, "JPEG")),
                                                        upload("gone.jpg", jpeg_bytes(seed=17))]).sample
    old, gone = sample.images.order_by("original_filename").reverse()
    taken_at_upload = {image.pk: (image.fingerprint, image.turned_fingerprints) for image in (old, gone)}
    gone.image.storage.delete(gone.image.name)
    FingerprintBand.objects.all().delete()
    SmearImage.objects.update(turned_fingerprints=[])

    migration.index_stored_fingerprints(apps, None)

    assert SmearImage.objects.get(pk=old.pk).turned_fingerprints == taken_at_upload[old.pk][1] != []
    assert SmearImage.objects.get(pk=gone.pk).turned_fingerprints == []
    assert FingerprintBand.objects.filter(image=gone).count() == 17
    turned = encoded(field.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG")
    response = client.post(reverse("lab:upload"), {"accession_number": "H26-0210",
                                                   "images": [upload("mirror.jpg", turned)]}, follow=True)
    assert "mirror.jpg is the same photograph as one in sample H26-0209" in response.content.decode()


@pytest.mark.django_db
def test_photographs_stored_before_fingerprints_get_theirs_from_their_files(queued):
    """Migration 0015: a photograph stored before 0014 had no fingerprint, so its re-encoded copy
    was counted again; it gets the one its file gives, and a photograph whose file is gone none."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("webapp.migrations.0015_fingerprint_stored_photographs")
    data = jpeg_bytes(seed=12)
    sample = create_sample_with_images("H26-0205", "", [upload("old.jpg", data),
                                                        upload("gone.jpg", jpeg_bytes(seed=13))]).sample
    old, gone = sample.images.order_by("original_filename").reverse()
    taken_at_upload = old.fingerprint
    gone.image.storage.delete(gone.image.name)
    SmearImage.objects.filter(sample=sample).update(fingerprint="")

    migration.fingerprint_stored_photographs(apps, None)

    assert SmearImage.objects.get(pk=old.pk).fingerprint == taken_at_upload != ""
    assert SmearImage.objects.get(pk=gone.pk).fingerprint == ""
    as_png = encoded(Image.open(io.BytesIO(data)), "PNG")
    copy = uploads.add_images_to_sample(sample, [upload("old.png", as_png)])
    assert copy.stored == [] and "same photograph as old.jpg" in copy.rejected[0].reason


@pytest.mark.django_db
@pytest.mark.parametrize("name, function", [
    ("0015_fingerprint_stored_photographs", "fingerprint_stored_photographs"),
    ("0017_index_stored_fingerprints", "index_stored_fingerprints"),
])
def test_migrations_that_read_photographs_stop_where_the_media_folder_is_missing(queued, settings, tmp_path,
                                                                                  name, function):
    """Run on a machine without the shared folder mounted, 0015 was recorded as applied with no
    photograph fingerprinted, for good: it stops instead, naming the folder."""
    import importlib

    from django.apps import apps
    from django.core.exceptions import ImproperlyConfigured

    migration = importlib.import_module(f"webapp.migrations.{name}")
    create_sample_with_images("H26-0207", "", [upload("old.jpg", jpeg_bytes(seed=14))])
    SmearImage.objects.update(fingerprint="")
    settings.MEDIA_ROOT = str(tmp_path / "not-mounted" / "media")

    with pytest.raises(ImproperlyConfigured, match="LEUKOSCOPE_MEDIA_ROOT=.*not-mounted.* is no folder"):
        getattr(migration, function)(apps, None)
    assert SmearImage.objects.get().fingerprint == ""


# --- too many files in one request ---------------------------------------------------------------

def tiny_files(count):
    return [upload(f"f{n}.jpg", b"x") for n in range(count)]


@pytest.mark.django_db
def test_a_batch_over_the_limit_gets_the_form_back_with_its_message(client, tech, queued, settings):
    too_many = settings.MAX_FILES_PER_UPLOAD + 1
    response = client.post(reverse("lab:upload"), {"accession_number": "H26-0300",
                                                   "images": tiny_files(too_many)})
    assert response.status_code == 400
    assert f"At most {settings.MAX_FILES_PER_UPLOAD} photographs per upload" in response.content.decode()
    assert response.context["form"]["accession_number"].value() == "H26-0300"
    assert not Sample.objects.exists()


@pytest.mark.django_db
def test_adding_a_batch_over_the_limit_to_a_sample_says_so_and_stores_nothing(client, tech, queued,
                                                                              settings):
    sample = Sample.objects.create(accession_number="H26-0301")
    response = client.post(reverse("lab:sample-add-images", args=[sample.pk]),
                           {"images": tiny_files(settings.MAX_FILES_PER_UPLOAD + 1)}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("lab:sample-detail", args=[sample.pk])
    body = response.content.decode()
    assert f"At most {settings.MAX_FILES_PER_UPLOAD} photographs per upload" in body
    assert f'data-max-files="{settings.MAX_FILES_PER_UPLOAD}"' in body  # for the page's own check
    assert not sample.images.exists() and queued == []


@pytest.mark.django_db
def test_far_too_many_files_get_a_readable_400_page(client, tech, settings):
    response = client.post(reverse("lab:upload"), {
        "accession_number": "H26-0302", "images": tiny_files(settings.DATA_UPLOAD_MAX_NUMBER_FILES + 1),
    })
    assert response.status_code == 400
    body = response.content.decode()
    assert f"Upload at most {settings.MAX_FILES_PER_UPLOAD} photographs at a time." in body
    assert "Sign out" in body  # the site's page, not Django's bare one



@pytest.mark.django_db
def test_photographs_past_the_upload_s_pixel_budget_are_refused_and_the_others_stored(client, tech, queued,
                                                                                   settings):
    # Four fields of 0.48 megapixels against a budget of 1: two fit, the third goes past it, and
    # the fourth, small as it is, is refused with it: "the rest" is what the next upload sends.
    settings.MAX_UPLOAD_MEGAPIXELS, settings.MAX_IMAGE_PIXELS = 1, 1_000_000
    fields = [upload(f"field-{n}.jpg", jpeg_bytes(width=800, height=600, seed=n)) for n in range(3)]
    small = upload("small.jpg", jpeg_bytes(seed=9))
    response = client.post(reverse("lab:upload"), {"accession_number": "H26-0500",
                                                   "images": [*fields, small]}, follow=True)
    sample = Sample.objects.get(accession_number="H26-0500")
    assert sorted(sample.images.values_list("original_filename", flat=True)) == ["field-0.jpg", "field-1.jpg"]
    body = response.content.decode()
    assert ("2 photographs from field-2.jpg on not stored: one upload may hold 1 megapixels and 1,024 MB of "
            "photographs together. Add them to the sample in another upload.") in body

    # Added to the sample, the rest fit.
    response = client.post(reverse("lab:sample-add-images", args=[sample.pk]),
                           {"images": [upload("field-2.jpg", jpeg_bytes(width=800, height=600, seed=2)),
                                       upload("small.jpg", jpeg_bytes(seed=9))]}, follow=True)
    assert sample.images.count() == 4 and "not stored" not in response.content.decode()


def test_files_past_the_upload_s_byte_budget_are_refused_unopened(settings, monkeypatch):
    # The budget counts the files as sent, as the page can: one 0.6 MB PNG fits a budget of 1 MB, a
    # second goes past it, and it and what follows are refused without being decoded.
    settings.MAX_UPLOAD_TOTAL_MB, settings.MAX_UPLOAD_BYTES = 1, 1024 * 1024
    noise = [np.random.default_rng(n).integers(0, 255, (400, 500, 3), np.uint8) for n in range(3)]
    noisy = [encoded(Image.fromarray(rgb), "PNG") for rgb in noise]
    assert all(500_000 < len(data) < 700_000 for data in noisy)
    opened, check = [], intake.check_image
    monkeypatch.setattr(intake, "check_image",
                        lambda uploaded: opened.append(uploaded.name) or check(uploaded))
    accepted, rejected = intake.check_files([upload(f"noisy-{n}.png", data) for n, data in enumerate(noisy)]
                                            + [upload("tiny.jpg", jpeg_bytes())])
    assert [name for name, _ in accepted] == ["noisy-0.png"]
    assert [(item.name, item.over_budget) for item in rejected] == [
        ("noisy-1.png", True), ("noisy-2.png", True), ("tiny.jpg", True)]
    assert opened == ["noisy-0.png"]

def test_the_budget_takes_at_least_one_photograph_of_the_largest_size_allowed(settings):
    # Set below what one photograph may be, it would refuse a photograph alone with a message
    # ("add it in another upload") no upload could follow.
    settings.MAX_UPLOAD_MEGAPIXELS, settings.MAX_UPLOAD_TOTAL_MB = 1, 1
    accepted, rejected = intake.check_files([upload("wide.jpg", jpeg_bytes(width=1300, height=800))])
    assert [name for name, _ in accepted] == ["wide.jpg"] and rejected == []


def test_a_photograph_refused_for_itself_is_charged_to_the_budget_all_the_same(settings):
    # Decoding a duplicate or a greyscale photograph takes as long as storing one: the review of
    # this change uploaded one folder twice, decoded whole at no cost to the budget.
    settings.MAX_UPLOAD_MEGAPIXELS, settings.MAX_IMAGE_PIXELS = 1, 1_000_000
    field = jpeg_bytes(width=800, height=600)
    accepted, rejected = intake.check_files([upload(f"copy-{n}.jpg", field) for n in range(3)])
    assert [name for name, _ in accepted] == ["copy-0.jpg"]
    assert [(item.name, item.over_budget) for item in rejected] == [
        ("copy-1.jpg", False), ("copy-2.jpg", True)]
    assert "same photograph as copy-0.jpg" in rejected[0].reason


@pytest.mark.django_db
def test_a_sample_is_classified_by_the_version_active_when_it_was_uploaded(client, tech, queued):
    # The concurrency audit activated another version 0.8 s after a 50-photograph upload: the worker
    # took whichever was active as it reached each photograph, and split the sample 34/16.
    nothing_active = create_sample_with_images("H26-0700", "", [upload("a.jpg", jpeg_bytes(seed=1))])
    assert nothing_active.stored[0].requested_version is None  # it waits for whichever comes
    uploaded_under = make_version()
    files = [upload(f"{n}.jpg", jpeg_bytes(seed=n)) for n in (2, 3)]
    sample = create_sample_with_images("H26-0701", "", files)
    assert [image.requested_version for image in sample.stored] == [uploaded_under] * 2
    make_version()  # activated while the worker has yet to reach them
    client.post(reverse("lab:sample-add-images", args=[sample.sample.pk]),
                {"images": [upload("4.jpg", jpeg_bytes(seed=4))]})
    assert {image.requested_version for image in sample.sample.images.all()} == {uploaded_under}

# --- accession numbers ---------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("typed", ["H26-1", " h26-1 ", "h26-1"])
def test_a_known_accession_number_links_the_existing_sample_instead(client, tech, queued, typed):
    existing = Sample.objects.create(accession_number="H26-1")
    response = client.post(reverse("lab:upload"), {
        "accession_number": typed, "images": [upload("s.jpg", jpeg_bytes())],
    })
    assert response.status_code == 400
    link = reverse("lab:sample-detail", args=[existing.pk])
    assert (f'Sample <a href="{link}">H26-1</a> already exists: add photographs to it instead.'
            in response.content.decode())
    assert Sample.objects.count() == 1 and queued == []
    # The browser has dropped the chosen files: the page says they must be chosen again.
    assert ("The 1 photograph you chose was not stored: correct the form, then choose it again."
            in response.content.decode())


@pytest.mark.django_db
def test_an_accession_number_taken_while_the_files_were_read_is_refused(client, tech, queued,
                                                                         monkeypatch):
    # The audit's two tabs posting H26-DBL-1 at once made two samples: the form's check had
    # passed for both before either was stored.
    checked = uploads.check_files

    def read_while_another_upload_stores(files, known=None):
        result = checked(files, known)
        Sample.objects.create(accession_number="h26-dbl-1")  # the other tab, done first
        return result

    monkeypatch.setattr(uploads, "check_files", read_while_another_upload_stores)
    response = client.post(reverse("lab:upload"), {
        "accession_number": "H26-DBL-1", "images": [upload("s.jpg", jpeg_bytes())],
    })
    assert response.status_code == 400
    assert "h26-dbl-1</a> already exists: add photographs to it instead." in response.content.decode()
    assert Sample.objects.count() == 1 and not SmearImage.objects.exists() and queued == []


@pytest.mark.django_db
def test_an_old_duplicate_with_stray_spaces_is_found_too(client, tech, queued):
    Sample.objects.create(accession_number=" H26-2 ")
    Sample.objects.create(accession_number="H26-2")  # made before the check: both stay readable
    response = client.post(reverse("lab:upload"), {
        "accession_number": "H26-2", "images": [upload("s.jpg", jpeg_bytes())],
    })
    assert response.status_code == 400 and "already exists" in response.content.decode()
    assert Sample.objects.count() == 2


@pytest.mark.django_db
def test_a_new_accession_number_that_merely_contains_a_known_one_is_accepted(client, tech, queued):
    Sample.objects.create(accession_number="H26-3")
    response = client.post(reverse("lab:upload"), {
        "accession_number": "H26-33", "images": [upload("s.jpg", jpeg_bytes())],
    })
    assert response.status_code == 302 and Sample.objects.count() == 2


@pytest.mark.django_db
def test_the_upload_page_says_what_it_accepts_before_a_file_is_chosen(client, tech, settings):
    settings.MAX_UPLOAD_BYTES = 25 * 1024 * 1024
    settings.MAX_IMAGE_PIXELS = 40_000_000
    settings.MAX_FILES_PER_UPLOAD = 50
    settings.MAX_UPLOAD_MEGAPIXELS, settings.MAX_UPLOAD_TOTAL_MB = 2000, 1024
    body = client.get(reverse("lab:upload")).content.decode()
    accepts = body[body.index('id="upload-accepts"'):body.index('id="upload-form"')]
    assert "colour photographs of a stained blood smear" in accepts
    assert "Greyscale images are refused: the stain" in accepts
    assert "JPEG, PNG, TIFF, BMP or WebP, up to 25 MB and 40 megapixels each" in accepts
    assert ("Up to 50 photographs at a time, at most 2,000 megapixels and 1,024 MB of photographs together;"
            in accepts)


@pytest.mark.django_db
def test_a_form_refused_for_its_photographs_does_not_ask_to_choose_them_again(client, tech, queued):
    response = client.post(reverse("lab:upload"), {"accession_number": "H26-0400"})
    assert response.status_code == 400 and 'data-role="choose-again"' not in response.content.decode()
    response = client.post(reverse("lab:upload"), {
        "accession_number": "H26-0401", "images": [upload("a.txt", b"not a photograph")]})
    assert response.status_code == 400 and 'data-role="choose-again"' not in response.content.decode()



def test_held_photographs_find_what_comparing_every_fingerprint_finds():
    # The band lookup must find every photograph within SAME_FIELD_MAX_DIFFERENCE steps that a
    # comparison with each one finds, in any orientation, and nothing past it.
    rng = np.random.default_rng(3)

    def random_print():
        return "".join(f"{value:016x}" for value in rng.integers(0, 2**63, size=4, dtype=np.uint64))

    def steps_away(fingerprint, steps):
        value = int(fingerprint, 16)
        for bit in rng.choice(256, size=steps, replace=False):
            value ^= 1 << int(bit)
        return f"{value:064x}"

    stored = [(f"{n:064x}", random_print(), f"field-{n}.jpg") for n in range(1500)]
    held = intake.HeldPhotographs(stored)
    tried = 0
    for steps in (0, 1, 8, 15, 16, 17, 24, 60):
        for n in range(0, 1500, 75):
            near = steps_away(stored[n][1], steps)
            # The copy's own fingerprint, or one of its turned ones (a photograph turned on upload).
            for orientation in (0, 4):
                turned = tuple(random_print() for _ in range(7))
                fingerprint = near if orientation == 0 else random_print()
                if orientation:
                    turned = (*turned[:orientation], near, *turned[orientation + 1:])
                checked = intake.CheckedImage(b"", ".jpg", 1, 1, checksum="f" * 64,
                                              fingerprint=fingerprint, turned=turned)
                everyone = next((name for _, other, name in stored
                                 if any(intake.same_field(mine, other) for mine in (fingerprint, *turned))),
                                None)
                assert held.holder(checked) == everyone, (steps, n, orientation)
                assert (everyone == stored[n][2]) == (steps <= intake.SAME_FIELD_MAX_DIFFERENCE)
                tried += 1
    assert tried == 320
    # The same file, by checksum, whatever its fingerprint; a photograph too flat to fingerprint
    # ("") is found by checksum alone.
    same_file = intake.CheckedImage(b"", ".png", 1, 1, checksum=stored[7][0], fingerprint="")
    assert held.holder(same_file) == "field-7.jpg"
    assert held.holder(intake.CheckedImage(b"", ".png", 1, 1, checksum="e" * 64)) is None


@pytest.mark.django_db
def test_the_sign_off_panel_follows_copies_stored_and_deleted_elsewhere(client, tech, queued):
    # The panel's search is kept between reviews (it costs about 2 ms a photograph), and must still
    # see a copy another sample stores later, and forget one deleted.
    from webapp.services.deletion import delete_image

    data = jpeg_bytes(seed=21)
    first = create_sample_with_images("H26-0301", "", [upload("field.jpg", data)]).sample
    panel, card = 'data-role="also-elsewhere"', 'data-role="held-elsewhere"'
    page = reverse("lab:sample-detail", args=[first.pk])
    assert panel not in client.get(page).content.decode()
    second = create_sample_with_images("H26-0302", "", [upload("copy.jpg", data)]).sample
    body = client.get(page).content.decode()
    assert "1 photograph is also in sample H26-0302: check that it belongs to this patient" in body
    assert "The same photograph is in sample H26-0302" in body  # the photograph's card reads it too
    again = client.get(page).content.decode()  # read again, from what was kept
    assert panel in again and card in again
    # Its number corrected in the Django admin: the kept search names the sample, not its number.
    Sample.objects.filter(pk=second.pk).update(accession_number="H26-0399")
    again = client.get(page).content.decode()
    assert "in sample H26-0399" in again and "H26-0302" not in again
    delete_image(second.images.get())
    body = client.get(page).content.decode()
    assert panel not in body and card not in body


class _HeldFile(io.BytesIO):
    """An uploaded file whose first read waits until the test lets it go: an upload caught mid-check."""

    def __init__(self, data, reading, go):
        super().__init__(data)
        self.name, self.size, self._reading, self._go = "held.jpg", len(data), reading, go

    def read(self, *args):
        self._reading.release()
        self._go.wait(10)
        return super().read(*args)


@pytest.mark.django_db(transaction=True)
def test_uploads_past_those_a_process_checks_at_once_are_refused_saying_so(client, tech, queued, caplog):
    # The security audit: twelve large uploads at once held every request thread of the web server,
    # and nobody's page loaded for 85 s. One past UPLOADS_CHECKED_AT_ONCE is refused at once, stores
    # nothing, and says to try again; once they are done, uploads are taken again.
    import threading

    earlier = create_sample_with_images("H26-0899", "", [upload("earlier.jpg", jpeg_bytes(seed=3))]).sample
    reading, go = threading.Semaphore(0), threading.Event()
    held = [[_HeldFile(jpeg_bytes(seed=n), reading, go)] for n in range(intake.UPLOADS_CHECKED_AT_ONCE)]
    checks = [threading.Thread(target=intake.check_files, args=(files,)) for files in held]
    for check in checks:
        check.start()
    try:
        for _ in checks:
            assert reading.acquire(timeout=10)  # each is mid-check, holding its place
        response = client.post(reverse("lab:upload"), {"accession_number": "H26-0900",
                                                       "images": [upload("field.jpg", jpeg_bytes(seed=1))]})
        assert response.status_code == 503 and response["Retry-After"] == "60"
        assert intake.UPLOADS_BUSY in response.content.decode()
        # Logged as the moment's refusal it is, not as an error that would wake whoever watches.
        assert not [record for record in caplog.records if record.levelname == "ERROR"]
        assert [record for record in caplog.records
                if record.levelname == "WARNING" and "Upload refused for now" in record.getMessage()]
        assert "The 1 photograph you chose was not stored: choose it again." in response.content.decode()
        assert not Sample.objects.filter(accession_number="H26-0900").exists()
        response = client.post(reverse("lab:sample-add-images", args=[earlier.pk]),
                               {"images": [upload("more.jpg", jpeg_bytes(seed=4))]}, follow=True)
        assert intake.UPLOADS_BUSY in response.content.decode() and earlier.images.count() == 1
    finally:
        go.set()
        for check in checks:
            check.join(10)
    response = client.post(reverse("lab:upload"), {"accession_number": "H26-0900",
                                                   "images": [upload("field.jpg", jpeg_bytes(seed=1))]})
    assert response.status_code == 302
    assert Sample.objects.get(accession_number="H26-0900").images.count() == 1


@pytest.mark.django_db
def test_an_upload_the_storage_refuses_keeps_nothing_and_says_so(client, tech, queued, settings):
    # The reliability audit: a media folder the web server cannot write answered with a bare 500 and
    # dropped the files. Now: nothing kept (no sample, no file), a sentence, and the form as sent.
    blocked = Path(settings.MEDIA_ROOT) / "smears"
    moved = blocked.rename(blocked.with_name("smears-away")) if blocked.exists() else None
    blocked.write_bytes(b"")  # where the photographs' folder goes: nothing can be written under it
    try:
        before = stored_files(settings.MEDIA_ROOT)
        files = [upload(f"f{n}.jpg", jpeg_bytes(seed=n)) for n in (1, 2)]
        response = client.post(reverse("lab:upload"), {"accession_number": "H26-0950", "images": files})
        body = response.content.decode()
        assert response.status_code == 503
        assert ("The photographs were not stored: this server cannot write to its storage folder "
                "(LEUKOSCOPE_MEDIA_ROOT: ") in body and "Nothing was kept." in body
        assert 'value="H26-0950"' in body
        assert not Sample.objects.exists() and stored_files(settings.MEDIA_ROOT) == before
    finally:
        blocked.unlink()
        if moved:
            moved.rename(blocked)


@pytest.mark.django_db
def test_a_refused_upload_posted_without_the_kind_shows_the_kind_it_was_read_with(client, tech, queued):
    response = client.post(reverse("lab:upload"), {"accession_number": "bad number!",
                                                   "images": [upload("a.jpg", jpeg_bytes())]})
    page = response.content.decode()
    assert response.status_code == 400 and not Sample.objects.exists()
    assert re.search(r'value="smear_fields"[^>]*checked', page)
    assert not re.search(r'value="one_cell_each"[^>]*checked', page)


def test_an_animation_keeps_its_first_frame_without_decoding_the_others(monkeypatch):
    # An animated PNG's frames share its canvas, and reaching frame N decodes every frame before it:
    # a 130 KB file of 160 one-pixel frames on a 6000x6000 canvas held the upload for 6 s, 25 MB of
    # them for hours. Only the first frame is decoded, as only it is stored.
    first, second = Image.fromarray(smear_array()), Image.fromarray(smear_array(seed=4))
    data = encoded(first, "PNG", save_all=True, append_images=[second, first])
    sought = []
    original = PngImagePlugin.PngImageFile.seek
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "seek",
                        lambda image, frame: (sought.append(frame), original(image, frame))[1])
    checked = check_image(upload("animated.png", data))
    assert "first of 3 frames kept" in checked.conversion_note
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(checked.content))), np.asarray(first))
    assert not [frame for frame in sought if frame > 0]


def test_a_photograph_is_stored_without_the_text_its_camera_wrote_beside_its_pixels():
    # The security audit: a JPEG whose EXIF held GPS and a patient's name (some microscope software
    # writes one) was stored and served byte for byte, to every account and the LIS's key.
    import hashlib

    from PIL import ImageCms

    picture = Image.fromarray(field_array())
    exif = Image.Exif()
    exif[0x010F] = "PatientName^Jane"  # Make
    exif[0x010E] = "MRN 123456"  # ImageDescription
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    jpeg = encoded(picture, "JPEG", quality=90, exif=exif.tobytes(), icc_profile=profile, comment=b"Jane Doe")
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "Patient: Jane Doe")
    png = encoded(picture, "PNG", pnginfo=text, icc_profile=profile)

    for data, extension in ((jpeg, ".jpg"), (png, ".png")):
        assert b"Jane" in data
        checked = check_image(upload(f"field{extension}", data))
        assert checked.extension == extension and not checked.conversion_note
        assert b"Jane" not in checked.content and b"123456" not in checked.content
        stored, sent = Image.open(io.BytesIO(checked.content)), Image.open(io.BytesIO(data))
        assert np.array_equal(np.asarray(stored), np.asarray(sent))  # the pixels, untouched
        assert stored.info.get("icc_profile") == profile  # the colours read the same
        # Known by the file sent: a second copy of it is found, and a TEST file of a source too.
        assert checked.checksum == hashlib.sha256(data).hexdigest()
    assert b"JFIF" in check_image(upload("field.jpg", jpeg)).content[:20]


def test_a_photograph_whose_structure_is_not_plain_is_stored_as_it_came():
    odd = jpeg_bytes()[:2] + b"\xff\xfe\x00\x01" + jpeg_bytes()[2:]  # a segment shorter than its length field
    assert intake.without_metadata(odd, "JPEG") == odd
    cut = encoded(Image.fromarray(smear_array()), "PNG")[:-12]  # no IEND
    assert intake.without_metadata(cut, "PNG") == cut


def test_stray_bytes_between_a_jpegs_segments_do_not_keep_its_exif():
    # libjpeg skips bytes between segments ("extraneous bytes before marker") and the file decodes:
    # the walker raised on them and stored the file as sent, a patient's name in its EXIF with it.
    exif = Image.Exif()
    exif[0x010E] = "MRN 123456 Jane Doe"
    data = encoded(Image.fromarray(field_array()), "JPEG", quality=90, exif=exif.tobytes())
    at = 2 + 2 + int.from_bytes(data[4:6], "big")  # after APP0 (JFIF), before APP1 (Exif)
    assert data[at:at + 2] == b"\xff\xe1"
    odd = data[:at] + b"\x00\x00" + data[at:]
    checked = check_image(upload("field.jpg", odd))
    assert checked.extension == ".jpg" and b"Jane" not in checked.content
    stored, sent = Image.open(io.BytesIO(checked.content)), Image.open(io.BytesIO(odd))
    assert np.array_equal(np.asarray(stored), np.asarray(sent))


@pytest.mark.django_db
def test_a_full_width_accession_number_is_stored_as_the_labels_plain_one(client, tech, queued):
    """A Japanese input method types "Ｈ２６－０４" in full width: the same label, not a refused one."""
    response = client.post(reverse("lab:upload"), {
        "accession_number": "Ｈ２６－０４", "images": [upload("s.jpg", jpeg_bytes())],
    })
    assert response.status_code == 302
    assert Sample.objects.get().accession_number == "H26-04"


@pytest.mark.django_db
def test_an_accession_number_with_a_run_of_spaces_is_the_one_with_one(client, tech, queued):
    """A page shows "H26 05" and "H26  05" alike (HTML collapses the spaces), and both were stored:
    one specimen's cells split over two samples that read as one."""
    for typed in ("H26  05", "H26 \u3000 05"):
        client.post(reverse("lab:upload"),
                    {"accession_number": typed, "images": [upload("s.jpg", jpeg_bytes())]})
    assert list(Sample.objects.values_list("accession_number", flat=True)) == ["H26 05"]
    refused = client.post(reverse("lab:upload"), {"accession_number": "H26 05", "images": [upload(
        "t.jpg", jpeg_bytes(seed=3))]})
    assert refused.status_code == 400 and Sample.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("typed", ["Mañana-1", "Man\u0303ana-1", "ГБ-123"])
def test_an_accession_number_with_accents_or_another_script_says_which_letters_it_takes(
        client, tech, queued, typed):
    """"Use letters" refused "ñ", a letter to a Spanish lab: the message names the letters A-Z."""
    response = client.post(reverse("lab:upload"), {
        "accession_number": typed, "images": [upload("s.jpg", jpeg_bytes())],
    })
    assert response.status_code == 400 and not Sample.objects.exists()
    assert "Use the letters A-Z (without accents), digits" in response.content.decode()


@pytest.mark.django_db
def test_a_file_name_is_kept_composed_and_without_direction_overrides(client, tech, queued):
    """macOS sends "Mañana.jpg" decomposed (n and U+0303), and a right-to-left override makes
    "x" RLO "gpj.exe" read "xexe.jpg": stored as the pages should show them, composed and undisguised."""
    response = client.post(reverse("lab:upload"), {
        "accession_number": "H26-0810",
        "images": [upload("Man\u0303ana.jpg", jpeg_bytes(seed=1)),
                   upload("x\u202egpj.exe", jpeg_bytes(seed=2))],
    })
    assert response.status_code == 302
    names = set(SmearImage.objects.values_list("original_filename", flat=True))
    assert names == {"Ma\u00f1ana.jpg", "xgpj.exe"}


@pytest.mark.django_db(transaction=True)
def test_photographs_added_to_a_sample_deleted_while_the_files_were_read_are_not_kept(queued, monkeypatch):
    # The sample deleted (the deletion committed) while the files were checked: the photographs' rows
    # failed at the commit, an IntegrityError, a 500, and their files stayed in the media folder. On
    # either database; tests/webapp/test_deleted_meanwhile.py has the two requests at once.
    from webapp.services.deletion import delete_sample
    from webapp.services.locking import DeletedMeanwhile

    sample = create_sample_with_images("H26-0702", "", [upload("a.jpg", jpeg_bytes())]).sample
    media = Path(SmearImage._meta.get_field("image").storage.location)
    check_files = uploads.check_files

    def read_while_the_sample_is_deleted(files, *known):
        checked = check_files(files, *known)
        delete_sample(Sample.objects.get(pk=sample.pk))
        return checked

    monkeypatch.setattr(uploads, "check_files", read_while_the_sample_is_deleted)
    files_before = stored_files(media)
    refusal = r"^Sample H26-0702 was deleted meanwhile: nothing was stored\.$"
    with pytest.raises(DeletedMeanwhile, match=refusal):
        uploads.add_images_to_sample(sample, [upload("b.jpg", jpeg_bytes(seed=3))])
    assert not SmearImage.objects.exists()
    assert stored_files(media) <= files_before
