"""The largest photograph Leukoscope decodes (no imports: settings read this)."""

# Decoded, a photograph takes 3 bytes a pixel (120 MB at 40 megapixels): upload refuses one with
# more pixels (webapp.intake, through settings.MAX_IMAGE_PIXELS, whose default this is), and
# training, which decodes two at a time, skips one (classifier.dataset), each from the file's
# header before a pixel is decoded. One number, so that a photograph training learnt from is one
# the site takes.
MAX_PHOTOGRAPH_PIXELS = 40_000_000
