"""Pages and JSON travel gzipped to a browser that accepts it; photographs, already compressed,
travel as they are."""

import gzip
import io
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from PIL import Image

from tests.webapp.lab_factories import make_sample

pytestmark = pytest.mark.django_db

GZIP = {"HTTP_ACCEPT_ENCODING": "gzip, deflate"}


def test_a_sample_page_and_its_json_are_sent_gzipped(client, tech):
    sample = make_sample("GZ-0001", types=("NEUTROPHIL",) * 40)
    url = reverse("lab:sample-detail", args=[sample.pk])
    plain = client.get(url)
    assert "Content-Encoding" not in plain  # a client that did not ask gets the page as it is

    packed = client.get(url, **GZIP)

    assert packed["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed["Vary"]
    page = gzip.decompress(packed.content).decode()
    assert "GZ-0001" in page and page.count('class="cellrow"') == 40
    assert len(packed.content) < len(plain.content) / 4
    api = client.get(reverse("lab:api-sample", args=[sample.pk]), **GZIP)
    assert api["Content-Encoding"] == "gzip"
    assert b'"GZ-0001"' in gzip.decompress(api.content)


def test_a_photograph_is_sent_as_it_is(client, tech):
    pixels = Image.effect_noise((300, 300), 60).convert("RGB")
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    path = Path(settings.MEDIA_ROOT) / "smears" / "gz-photo.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())

    response = client.get("/media/smears/gz-photo.png", **GZIP)

    assert response.status_code == 200 and "Content-Encoding" not in response
    assert b"".join(response.streaming_content) == buffer.getvalue()
