"""Colour profiles for tests, made here from sRGB's by changing its primaries: no profile file is
read from the machine."""

import io
import struct

from PIL import ImageCms

# Display P3's primaries as a profile states them (adapted to D50, as sRGB's are): Apple's.
DISPLAY_P3_PRIMARIES = ((0.5151, 0.2412, -0.0011), (0.2919, 0.6922, 0.0419), (0.1572, 0.0666, 0.7841))


def srgb_profile():
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _tags(profile):
    (count,) = struct.unpack(">I", profile[128:132])
    tags = {}
    for at in range(132, 132 + 12 * count, 12):
        signature, offset, size = struct.unpack(">4sII", profile[at:at + 12])
        tags[signature] = slice(offset, offset + size)
    return tags


def _renamed(profile, name):
    """The profile described as ``name`` (four letters) where it said "sRGB"."""
    renamed = bytes(profile).replace("sRGB".encode("utf-16-be"), name.encode("utf-16-be"))
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(renamed))).startswith(name)
    return renamed


def swapped_primaries_profile():
    """sRGB's red and blue primaries swapped: a pixel stored as pure red is pure blue. Its effect
    no test can mistake for rounding."""
    profile = bytearray(srgb_profile())
    tags = _tags(profile)
    red, blue = bytes(profile[tags[b"rXYZ"]]), bytes(profile[tags[b"bXYZ"]])
    profile[tags[b"rXYZ"]], profile[tags[b"bXYZ"]] = blue, red
    return _renamed(profile, "Swap")


def display_p3_profile():
    """Display P3, as an iPhone writes into its photographs: sRGB's tone curve and white, wider
    primaries."""
    profile = bytearray(srgb_profile())
    tags = _tags(profile)
    for tag, xyz in zip((b"rXYZ", b"gXYZ", b"bXYZ"), DISPLAY_P3_PRIMARIES, strict=True):
        at = tags[tag].start + 8  # after the type signature and its reserved bytes
        profile[at:at + 12] = struct.pack(">3i", *(round(value * 65536) for value in xyz))
    return _renamed(profile, "DP3 ")


def padded_profile(profile, size, fill=0):
    """``profile`` with a private tag of ``size`` bytes of ``fill`` after its own: as large as a
    profile may come, reading as it did."""
    count, = struct.unpack(">I", profile[128:132])
    table_end = 132 + 12 * count
    # Every tag moves down by the new entry of 12 bytes; the private one goes at the end.
    entries = [struct.unpack(">4sII", profile[at:at + 12]) for at in range(132, table_end, 12)]
    body = bytes(profile[table_end:])
    body += bytes(-len(body) % 4)  # a tag starts on four bytes
    private = b"zzzz" + bytes(4) + bytes([fill]) * size
    table = b"".join(struct.pack(">4sII", tag, offset + 12, length) for tag, offset, length in entries)
    table += struct.pack(">4sII", b"zzzz", table_end + 12 + len(body), len(private))
    padded = bytearray(profile[:128] + struct.pack(">I", count + 1) + table + body + private)
    padded[0:4] = struct.pack(">I", len(padded))
    return bytes(padded)
