"""Counts in words on what people read."""

import pytest

from webapp.wording import count_of


@pytest.mark.parametrize("n, noun, plural, words", [
    (0, "photograph", None, "0 photographs"),
    (1, "photograph", None, "1 photograph"),
    (2, "cell", None, "2 cells"),
    (1, "box", "boxes", "1 box"),
    (3, "box", "boxes", "3 boxes"),
])
def test_count_of_says_the_noun_in_the_number_it_counts(n, noun, plural, words):
    assert count_of(n, noun, plural) == words
