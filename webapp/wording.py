"""Counts in words, for what people read: "1 photograph", "2 photographs", never "photograph(s)"."""


def count_of(n, noun, plural=None):
    """count_of(1, "cell") -> "1 cell"; count_of(3, "box", "boxes") -> "3 boxes"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
