"""Lines of a report paragraph that holds right-to-left text, as the PDF is handed them: broken in
reading order, then each line put in the order it is seen."""

from webapp.reports.reading_order import Segment, in_display_order, lines_in_display_order


def one_point_a_character(text, bold):
    return float(len(text))


def test_a_hebrew_name_is_turned_around_inside_an_english_sentence_and_nothing_else_is():
    sentence = [Segment("Signed by "), Segment("דוד לוי", isolate=True), Segment(" on Monday")]
    lines = lines_in_display_order(sentence, 100, one_point_a_character)
    assert lines == [[("Signed by ", False), ("יול דוד", False), (" on Monday", False)]]


def test_a_long_right_to_left_text_keeps_its_first_words_on_its_first_line():
    # Reordered first and broken after, the first line would hold the sentence's last words.
    words = ["אחת", "שתיים", "שלוש", "ארבע", "חמש", "שש"]
    note = [Segment("Note:", bold=True), Segment(" "), Segment(" ".join(words), isolate=True)]
    lines = lines_in_display_order(note, 15, one_point_a_character)
    assert lines == [
        [("Note:", True), (" ", False), ("םייתש תחא", False)],
        [("שמח עברא שולש", False)],
        [("שש", False)],
    ]
    assert all(sum(len(text) for text, _ in line) <= 15 for line in lines)


def test_a_line_break_typed_in_a_note_ends_the_line_and_a_word_wider_than_a_line_has_one_of_its_own():
    note = [Segment("שלום \r\nעולם " + "א" * 30, isolate=True)]
    lines = lines_in_display_order(note, 10, one_point_a_character)
    assert lines == [[("םולש", False)], [("םלוע", False)], [("א" * 30, False)]]


def test_a_no_break_space_keeps_a_number_with_its_unit():
    # Read from the right, as the sentence around them is: 100, then µm.
    note = [Segment("תאים 100\u00a0µm שלום", isolate=True)]
    lines = lines_in_display_order(note, 10, one_point_a_character)
    assert lines == [[("םיאת", False)], [("µm\u00a0100", False)], [("םולש", False)]]


def test_a_direction_override_typed_into_a_file_name_turns_nothing_around():
    # "x" RLO "gpj.exe" would read "xexe.jpg": the override is dropped, as on the site.
    sentence = [Segment("File "), Segment("x\u202egpj.exe", isolate=True), Segment(" by "),
                Segment("שלום", isolate=True)]
    lines = lines_in_display_order(sentence, 100, one_point_a_character)
    assert lines == [[("File ", False), ("xgpj.exe", False), (" by ", False), ("םולש", False)]]


def test_arabic_letters_are_joined_and_a_ligature_the_font_lacks_is_not_used():
    # أحمد: alef with hamza (isolated), hah (initial), meem (medial), dal (final), drawn right to left.
    assert in_display_order("أحمد") == "\ufeaa\ufee4\ufea3\ufe83"
    # DejaVu Sans has no ALLAH ligature (U+FDF2): the word's letters are joined one by one.
    assert "\ufdf2" not in in_display_order("الله") and len(in_display_order("الله")) == 4
    assert in_display_order("Giemsa 100x") == "Giemsa 100x"
