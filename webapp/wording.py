"""Counts in words, for what people read: "1 photograph", "2 photographs", never "photograph(s)"."""


def count_of(n, noun, plural=None):
    """count_of(1, "cell") -> "1 cell"; count_of(3, "box", "boxes") -> "3 boxes"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def choose_again(sent):
    """What a refused upload form says of the ``sent`` photographs a browser does not keep."""
    if not sent:
        return ""
    was, them = ("was", "it") if sent == 1 else ("were", "them")
    return (f"The {count_of(sent, 'photograph')} you chose {was} not stored: correct the form, then "
            f"choose {them} again.")
