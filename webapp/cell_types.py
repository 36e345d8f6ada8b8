"""The cell-type vocabulary of the lab's pages: which types a reviewer may give a cell, how a label
carries over to another network's types, and the order types are listed in.

Plain functions of type names: the selectors that count cells and the services that change them
both read it, so neither has to import the other.
"""

from classifier.labels import BINARY_CLASSES, FOUR_CLASSES, binary_group
from webapp.models import Cell

# The lab's usual order; artefacts, which are no leukocytes, come last.
TYPE_ORDER = (*FOUR_CLASSES, Cell.BASOPHIL, *BINARY_CLASSES)


def type_order(name):
    """Sort key: the lab's usual order, unknown types after it by name, artefacts last."""
    if name == Cell.ARTEFACT:
        return (len(TYPE_ORDER) + 1, name)
    return (TYPE_ORDER.index(name), name) if name in TYPE_ORDER else (len(TYPE_ORDER), name)


def review_types(class_names):
    """The types a reviewer may give a cell called by a network with these classes.

    The network's own, the basophil where the network names leukocyte types (under a binary
    network a basophil is simply POLYNUCLEAR), and ARTEFACT for a detection that is no white cell.
    """
    names = list(class_names)
    if not set(names) <= set(BINARY_CLASSES) and Cell.BASOPHIL not in names:
        names.append(Cell.BASOPHIL)
    return [*names, Cell.ARTEFACT]


def allowed_types(cell):
    """The types a reviewer may give this cell: those of the network that called it."""
    return review_types(cell.model_version.class_names) if cell.model_version_id else []


def carried_label(label, class_names):
    """A reviewer's label restated in another network's types, or None where it has no place.

    A binary network's cell takes a type's group (a lymphocyte is MONONUCLEAR); a four-type
    network's cell cannot take MONONUCLEAR, which does not say which type the cell is.
    """
    allowed = review_types(class_names)
    if label in allowed:
        return label
    group = binary_group(label)
    return group if group in allowed else None
