"""The lines of a report paragraph that holds right-to-left text (Arabic, Hebrew, Persian, Urdu),
broken and put in the order they are seen, for a renderer that sets every line left to right and
joins no letters (ReportLab).

A paragraph is a sentence of the report's own (left-to-right) words with a person's or a file's text
set in it as an isolate, as <bdi> sets it on the report page: the isolate's direction comes from its
first strong letter, and its letters are reordered among themselves, never with the words around it.
Lines are broken in reading order first and each line is then reordered on its own (Unicode's
bidirectional algorithm, python-bidi): reordering a whole sentence before breaking it would put its
end on its first line. Arabic letters are drawn in their joined forms (arabic-reshaper).
"""

import unicodedata
from dataclasses import dataclass

import arabic_reshaper
from bidi import get_display

from webapp.wording import DIRECTION_CONTROLS

# DejaVu Sans, the report's font, has no glyph for the ligature ALLAH (U+FDF2): its letters are
# joined one by one instead. The other ligatures the reshaper makes by default (lam with alef) it has.
_RESHAPER = arabic_reshaper.ArabicReshaper(configuration={"ARABIC LIGATURE ALLAH": False})
LINE_BREAK = "\n"
NO_BREAK_SPACES = "\u00a0\u2007\u202f"


@dataclass(frozen=True)
class Segment:
    """A stretch of a paragraph in reading order: the report's own words, or (isolate) a person's or
    a file's text. LINE_BREAK in either ends a line."""
    text: str
    bold: bool = False
    isolate: bool = False


def holds_right_to_left(text):
    return any(unicodedata.bidirectional(char) in ("R", "AL") for char in text)


def _direction(text):
    """'R' where the first strong letter is right-to-left, else 'L' (HTML's dir="auto")."""
    for char in text:
        kind = unicodedata.bidirectional(char)
        if kind == "L":
            return "L"
        if kind in ("R", "AL"):
            return "R"
    return "L"


def _as_drawn(text):
    """A person's text as it will be reordered: direction controls dropped (an override typed into a
    file name would turn the words after it around, as on the site: webapp.wording.isolated), Arabic
    letters in their joined forms."""
    return _RESHAPER.reshape(text.translate(DIRECTION_CONTROLS))


def in_display_order(text):
    """One line's worth of a person's text, isolated, in the order it is seen."""
    if not holds_right_to_left(text):
        return text
    return get_display(_as_drawn(text), base_dir=_direction(text))


def _characters(segments):
    """Each character with (bold, isolate number or None), isolates joined and their directions."""
    characters, directions = [], []
    for segment in segments:
        isolate = None
        text = segment.text
        if segment.isolate:
            isolate = len(directions)
            directions.append(_direction(text))
            text = _as_drawn(text)
        characters += [(char, segment.bold, isolate) for char in text]
    return characters, directions


def _breaks_a_line(char):
    # A no-break space (typed between a number and its unit) holds its neighbours together.
    return char.isspace() and char not in NO_BREAK_SPACES


def _words(characters):
    """Words (runs of characters between spaces), None for a line break, in reading order. A space
    keeps its attributes: it belongs to the isolate or the sentence it was typed in."""
    words, word = [], []
    for item in characters:
        char = item[0]
        if char == LINE_BREAK or _breaks_a_line(char):
            if word:
                words.append(word)
            word = []
            if char == LINE_BREAK:
                words.append(None)
            elif words and words[-1] is not None and words[-1][0][0] != " ":
                words.append([(" ", *item[1:])])  # a break opportunity, as wide as a space
        else:
            word.append(item)
    if word:
        words.append(word)
    return words


def _runs_by(items, key):
    run = []
    for item in items:
        if run and key(item) != key(run[-1]):
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def _text_of(items):
    return "".join(char for char, _, _ in items)


def _width(items, measure):
    return sum(measure(_text_of(run), run[0][1]) for run in _runs_by(items, lambda i: i[1]))


def _trimmed(line):
    """A line without the space it ended at."""
    while line and line[-1][0] == " ":
        line = line[:-1]
    return line


def _broken(words, width, measure):
    """Lines in reading order, each as wide as `width` at most (but for a word wider than a line)."""
    lines, line, used = [], [], 0.0
    for word in words:
        if word is None:
            lines.append(_trimmed(line))
            line, used = [], 0.0
            continue
        is_space = word[0][0] == " "
        if is_space and not line:
            continue
        needed = _width(word, measure)
        if not is_space and line and used + needed > width:
            lines.append(_trimmed(line))
            line, used = [], 0.0
        line += word
        used += needed
    lines.append(_trimmed(line))
    return lines


def lines_in_display_order(segments, width, measure):
    """The paragraph `segments` broken into lines of at most `width` points (measure(text, bold) ->
    points), each line as (text, bold) runs in the order they are drawn, left to right."""
    characters, directions = _characters(segments)
    shown = []
    for line in _broken(_words(characters), width, measure):
        runs = []
        for part in _runs_by(line, lambda item: item[2]):
            isolate = part[0][2]
            if isolate is None:
                runs += [(_text_of(run), run[0][1]) for run in _runs_by(part, lambda i: i[1])]
            else:
                runs.append((get_display(_text_of(part), base_dir=directions[isolate]), part[0][1]))
        shown.append(runs)
    return shown
