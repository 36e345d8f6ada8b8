"""What the stylesheets must hold for browsers the site's users may still have."""

import re
from pathlib import Path

CSS = Path(__file__).resolve().parent.parent / "static" / "css"


def test_generated_content_with_alt_text_has_a_fallback_before_it():
    # `content: "x" / ""` (alt text, so a screen reader does not read a label twice) is dropped as
    # a whole by Firefox before 128 and Safari before 17.4: without a plain `content` before it in
    # the same rule, the phone layout's column names vanished there.
    for sheet in sorted(CSS.glob("*.css")):
        for rule in re.findall(r"\{([^{}]*)\}", sheet.read_text()):
            declarations = [part.strip() for part in rule.split(";")]
            for at, declaration in enumerate(declarations):
                if declaration.startswith("content:") and re.search(r"\s/\s", declaration):
                    earlier = [d for d in declarations[:at] if d.startswith("content:")]
                    assert earlier, f"{sheet.name}: {declaration!r} has no fallback before it"
