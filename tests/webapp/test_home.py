"""The home page and the navigation around every page."""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_every_page_links_to_changing_ones_password(client, tech):
    for name in ("home", "lab:sample-list", "lab:history"):
        body = client.get(reverse(name)).content.decode()
        assert f'href="{reverse("password_change")}"' in body
