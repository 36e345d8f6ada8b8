"""Counts and sizes in words on what people read; a right-to-left name inside an English sentence."""

import math

import pytest

from webapp.wording import count_of, isolated, megabytes


@pytest.mark.parametrize("n, noun, plural, words", [
    (0, "photograph", None, "0 photographs"),
    (1, "photograph", None, "1 photograph"),
    (2, "cell", None, "2 cells"),
    (1, "box", "boxes", "1 box"),
    (3, "box", "boxes", "3 boxes"),
])
def test_count_of_says_the_noun_in_the_number_it_counts(n, noun, plural, words):
    assert count_of(n, noun, plural) == words


def test_a_right_to_left_name_is_isolated_in_a_sentence_and_any_other_left_as_it_is():
    # Without the isolates "عينة-١.jpg queued again." shows with the sentence's words carried along.
    assert isolated("عينة-١.jpg") == "\u2068عينة-١.jpg\u2069"
    assert isolated("דגימה.png") == "\u2068דגימה.png\u2069"
    for name in ("field-1.jpg", "Mañana.jpg", "標本１.jpg", "мазок.jpg", ""):
        assert isolated(name) == name


def test_a_name_stored_with_direction_controls_cannot_turn_the_sentence_around():
    # An older release stored file names as sent: "x" RLO "gpj.exe" reads "xexe.jpg", and in a plain
    # sentence the override runs on over the words after it ("... queued again." backwards). A PDI
    # in the name would close the isolate early and let an override out again.
    assert isolated("x\u202egpj.exe") == "xgpj.exe"
    assert isolated("عينة\u2069\u202e.jpg") == "\u2068عينة.jpg\u2069"


@pytest.mark.parametrize("size, rounding, words", [
    (16 * 1024, math.floor, "16 KB"),  # a full disk is not "0 MB"
    (1000, math.ceil, "1 KB"),
    (25 * 2**20, math.floor, "25 MB"),
    (25 * 2**20 + 2, math.ceil, "25.1 MB"),  # a file just over a 25 MB limit is not "25 MB"
    (3 * 2**19, math.floor, "1.5 MB"),
    (1024 * 2**20, math.floor, "1,024 MB"),
])
def test_megabytes_reads_as_a_person_says_a_size(size, rounding, words):
    assert megabytes(size, rounding) == words
