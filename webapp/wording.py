"""Counts in words, for what people read: "1 photograph", "2 photographs", never "photograph(s)"."""


def count_of(n, noun, plural=None):
    """count_of(1, "cell") -> "1 cell"; count_of(3, "box", "boxes") -> "3 boxes"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def superseded_call(cell):
    """Why a cell's call may not be changed: a later version classified its photograph again."""
    return (f"This is model v{cell.model_version_id}'s earlier call; the sample now counts "
            f"v{cell.image.model_version_id}'s call on this photograph.")


def choose_again(sent, correct_first=True):
    """What a refused upload form says of the ``sent`` photographs a browser does not keep; where
    nothing in the form was wrong (``correct_first`` false), only to choose them again."""
    if not sent:
        return ""
    was, them = ("was", "it") if sent == 1 else ("were", "them")
    correct = "correct the form, then " if correct_first else ""
    return f"The {count_of(sent, 'photograph')} you chose {was} not stored: {correct}choose {them} again."
