"""What is said under a leukocyte formula: which network made it and how each type counts, both
written from the records and from webapp.counting, never by hand per type."""

from dataclasses import dataclass, field

from webapp.cell_types import review_types, type_order
from webapp.counting import MONONUCLEAR, POLYNUCLEAR, RULES, Counting, group_of, rule_for, type_label
from webapp.selectors import active_version_id, class_names_by_version, version_tasks

# What each way of counting means on the formula, in the order the note gives them.
COUNTING_NOTES = {
    Counting.DIFFERENTIAL: "percent of the leukocytes counted, each rounded to a tenth on its own, so "
                           "that equal counts read equal (together they may add up to a few tenths more or "
                           "less than 100)",
    Counting.PER_100_LEUKOCYTES: "reported per 100 leukocytes beside the differential, not in it",
    Counting.LISTED_APART: "listed apart, not counted",
    Counting.UNRESOLVED: "not counted; the sample cannot be signed until a reviewer names these "
                         "cells or a hematologist keeps them as unidentified",
}
COUNTING_TITLES = {
    Counting.DIFFERENTIAL: "Differential",
    Counting.PER_100_LEUKOCYTES: "Per 100 leukocytes",
    Counting.LISTED_APART: "Listed apart",
    Counting.UNRESOLVED: "Unresolved",
}


@dataclass
class CountingLine:
    title: str  # "Differential"
    types: list  # labels of the types counted so ("Neutrophil", ...); NRBC-style names alongside
    meaning: str


@dataclass
class FormulaNotes:
    """Which network made the formula and how each type it may hold is counted."""

    networks: list = field(default_factory=list)  # (version id, "eight cell types")
    # The active version, where none of the formula's networks is it: new samples are counted by
    # another network than this one, which a reader comparing samples should know.
    active_elsewhere: int | None = None
    counting: list = field(default_factory=list)  # CountingLine per way of counting
    groups: list = field(default_factory=list)  # (group label, [type labels])


def _type_names(version_ids):
    """The types a formula of these versions may hold: what their networks call and reviewers
    may give; every type of the rules where no network has called a cell yet."""
    class_names = class_names_by_version(version_ids).values()
    names = {name for names in class_names for name in review_types(names)}
    return sorted(names or RULES, key=type_order)


def _says_more(name):
    """Whether a type's reported name adds to its label: "Erythroblast (NRBC)", not "Smudge cell
    (Smudge cells)"."""
    reported = rule_for(name).reported_as
    return bool(reported) and not reported.lower().startswith(type_label(name).lower().rstrip("s"))


def formula_notes(formula):
    names = _type_names(formula.model_versions)
    counting = []
    for how, meaning in COUNTING_NOTES.items():
        types = [type_label(name) + (f" ({rule_for(name).reported_as})" if _says_more(name) else "")
                 for name in names if rule_for(name).counting is how]
        if types:
            counting.append(CountingLine(COUNTING_TITLES[how], types, meaning))
    groups = [(type_label(group), [type_label(name) for name in names
                                   if group_of(name) == group and name != group])
              for group in (MONONUCLEAR, POLYNUCLEAR)]
    active = active_version_id() if formula.model_versions else None
    return FormulaNotes(
        networks=[(pk, task[:1].lower() + task[1:]) for pk, task in version_tasks(formula.model_versions)],
        active_elsewhere=active if active not in formula.model_versions else None,
        counting=counting,
        groups=[(group, members) for group, members in groups if members],
    )
