"""What the pages show, shaped for their templates: declared view models (dataclasses) built from
the selectors' results, figures and tables from stored metrics, learning curves as SVG geometry.

Presenters read (through selectors) and shape; they never change anything, and the ORM records
they carry are left as loaded: whatever a page needs beside a record is a field of a view model.
"""

from dataclasses import fields


class ViewModel:
    """A page's figures as one dataclass, handed to its template field by field."""

    def as_context(self):
        # dataclasses.asdict would deep-copy the ORM records the view model carries.
        return {field.name: getattr(self, field.name) for field in fields(self)}
