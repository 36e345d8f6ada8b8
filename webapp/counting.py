"""How the lab counts each cell type: the one place the formula, the review, the report, the
sign-off and the LIS export read it from.

A hematology lab counts a differential over leukocytes only. Nucleated red cells (erythroblasts)
and smudge cells are reported per 100 leukocytes beside it, as analysers and manual counts do;
platelets and artefacts are detections the formula leaves out and lists apart; an unidentified
cell stops the sign-off until a reviewer names it or a hematologist keeps it as unidentified.
The published system's binary grouping (MONONUCLEAR = lymphocytes and monocytes, POLYNUCLEAR =
granulocytes) is reported as a table of its own over the same leukocytes.

Plain data and functions of type names: selectors, services, presenters and exports all read it.
"""

import enum
from dataclasses import dataclass

MONONUCLEAR = "MONONUCLEAR"
POLYNUCLEAR = "POLYNUCLEAR"


class Counting(enum.Enum):
    DIFFERENTIAL = "in the differential"
    PER_100_LEUKOCYTES = "reported per 100 leukocytes, not in the differential"
    LISTED_APART = "listed apart, not counted"
    UNRESOLVED = "blocks sign-off until named or kept as unidentified"


@dataclass(frozen=True)
class TypeRule:
    name: str
    counting: Counting
    key: str  # the review shortcut; fixed across the site so hands learn it
    group: str = ""  # MONONUCLEAR / POLYNUCLEAR, "" where the published grouping has no place
    reviewer_only: bool = False  # no network calls it; only a reviewer gives it
    reported_as: str = ""  # the name a per-100 figure goes by on reports (NRBC)
    # The per-100 figure's key in the CSV and the API: a code a lab's system can match on, apart
    # from the words a report prints ("Smudge cells").
    export_code: str = ""
    meaning: str = ""

    @property
    def label(self):
        return self.name.replace("_", " ").capitalize()

    @property
    def in_differential(self):
        return self.counting is Counting.DIFFERENTIAL


_D, _P, _A, _U = (Counting.DIFFERENTIAL, Counting.PER_100_LEUKOCYTES, Counting.LISTED_APART,
                  Counting.UNRESOLVED)

# The order of the site's lists and reports: the four types of the published data (as its folders
# sort), the basophil, then what a differential must not miss, then what it leaves out.
RULES = {rule.name: rule for rule in (
    TypeRule("EOSINOPHIL", _D, "E", POLYNUCLEAR),
    TypeRule("LYMPHOCYTE", _D, "L", MONONUCLEAR),
    TypeRule("MONOCYTE", _D, "M", MONONUCLEAR),
    TypeRule("NEUTROPHIL", _D, "N", POLYNUCLEAR),
    TypeRule("BASOPHIL", _D, "B", POLYNUCLEAR),
    # Promyelocytes to metamyelocytes: granulocytes not yet segmented; counted, never as neutrophils.
    TypeRule("IMMATURE_GRANULOCYTE", _D, "I", POLYNUCLEAR),
    # A variant lymphocyte (ICSH's term) is still a lymphocyte in the published grouping.
    TypeRule("REACTIVE_LYMPHOCYTE", _D, "V", MONONUCLEAR, reviewer_only=True),
    TypeRule("BLAST", _D, "T", reviewer_only=True),
    TypeRule("PLASMA_CELL", _D, "C", reviewer_only=True),
    # A binary network's calls are the groups themselves.
    TypeRule(MONONUCLEAR, _D, "M", MONONUCLEAR),
    TypeRule(POLYNUCLEAR, _D, "P", POLYNUCLEAR),
    TypeRule("ERYTHROBLAST", _P, "R", reported_as="NRBC", export_code="NRBC",
             meaning="nucleated red cells per 100 leukocytes"),
    TypeRule("SMUDGE_CELL", _P, "S", reviewer_only=True, reported_as="Smudge cells", export_code="SMUDGE",
             meaning="smudge cells per 100 leukocytes"),
    TypeRule("PLATELET", _A, "G"),  # G: a platelet clump is the usual false detection
    TypeRule("ARTEFACT", _A, "A", reviewer_only=True),
    TypeRule("UNIDENTIFIED", _U, "U", reviewer_only=True),
)}

REVIEWER_ONLY = tuple(name for name, rule in RULES.items() if rule.reviewer_only)
# The types of a leukocyte differential a reviewer may always give, whatever network called the
# cell: a four-type network knows no basophil, yet a basophil is what the reviewer sees.
LAB_TYPES = ("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL", "BASOPHIL",
             "IMMATURE_GRANULOCYTE", "ERYTHROBLAST", "PLATELET")
# Reviewer-only types that name no leukocyte type, and so fit a binary network's cells too.
TYPELESS = ("SMUDGE_CELL", "ARTEFACT", "UNIDENTIFIED")


def rule_for(name):
    """The rule of a type; a type the lab's list lacks (a lab's own class) counts in the
    differential, with no group and no fixed key."""
    return RULES.get(name) or TypeRule(name, Counting.DIFFERENTIAL, "")


def type_label(name):
    """IMMATURE_GRANULOCYTE -> Immature granulocyte: the name people read, never the stored one."""
    return rule_for(name).label if name else ""


def counting_of(name):
    return rule_for(name).counting


def group_of(name):
    return rule_for(name).group


def group_members(group):
    """The types of a binary group (MONONUCLEAR: lymphocytes, monocytes...), the group's own name
    (a binary network's call) among them; none for a name that is no group."""
    if group not in (MONONUCLEAR, POLYNUCLEAR):
        return []
    return [name for name, rule in RULES.items() if rule.group == group]


def type_order(name):
    """Sort key: the report's order; a lab's own types after the differential's, by name."""
    names = list(RULES)
    if name in RULES:
        return (names.index(name), name)
    return (names.index("ERYTHROBLAST") - 0.5, name)


