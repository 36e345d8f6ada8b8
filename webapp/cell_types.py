"""The cell-type vocabulary of the lab's pages: which types a reviewer may give a cell, how a label
carries over to another network's types, and the order types are listed in.

Plain functions of type names over the counting rules (webapp/counting.py): the selectors that
count cells and the services that change them both read it, so neither imports the other.
"""

from webapp.counting import (
    LAB_TYPES,
    MONONUCLEAR,
    POLYNUCLEAR,
    REVIEWER_ONLY,
    TYPELESS,
    group_of,
    rule_for,
    type_order,
)

__all__ = ["allowed_types", "carried_label", "review_types", "type_order", "type_shortcuts"]


def review_types(class_names):
    """The types a reviewer may give a cell called by a network with these classes, in the
    report's order.

    A network that names leukocyte types: its own, every type of the lab's differential (a
    four-type network knows no basophil, yet a basophil is what the reviewer sees) and the
    reviewer-only types. A binary network: its two groups, the lab's types that are no leukocyte
    (an erythroblast, a platelet: the formula counts them apart whatever network called the cell),
    the reviewer-only types in neither group (a blast, a plasma cell: counted beside the groups,
    never in one) and those that name no leukocyte type (a smudge cell, an artefact, an
    unidentified cell).
    """
    names = set(class_names)
    if names <= {MONONUCLEAR, POLYNUCLEAR}:
        names |= set(TYPELESS) | {name for name in LAB_TYPES if not rule_for(name).in_differential}
        names |= {name for name in REVIEWER_ONLY if not group_of(name)}
    else:
        names |= set(LAB_TYPES) | set(REVIEWER_ONLY)
    return sorted(names, key=type_order)


def allowed_types(cell):
    """The types a reviewer may give this cell: those of the network that called it."""
    return review_types(cell.model_version.class_names) if cell.model_version_id else []


def type_shortcuts(names):
    """(type, key) per type: the type's fixed key, or "" for a lab's own type the rules lack."""
    return [(name, rule_for(name).key) for name in names]


def carried_label(label, class_names):
    """A reviewer's label restated in another network's types, or None where it has no place.

    A binary network's cell takes a type's group (a lymphocyte is MONONUCLEAR); a four-type
    network's cell cannot take MONONUCLEAR, which does not say which type the cell is.
    """
    allowed = review_types(class_names)
    if label in allowed:
        return label
    group = group_of(label)
    return group if group in allowed else None
