"""Cell types the lab reports, and the published system's binary grouping of them."""

FOUR_CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
BINARY_CLASSES = ("MONONUCLEAR", "POLYNUCLEAR")

# Basophils, when a lab adds them, are granulocytes too, as are immature granulocytes
# (promyelocytes to metamyelocytes): the lab's POLYNUCLEAR group is the granulocytes, segmented or
# not yet. Erythroblasts and platelets are no leukocytes: the grouping has no place for them.
BINARY_GROUP = {
    "EOSINOPHIL": "POLYNUCLEAR",
    "NEUTROPHIL": "POLYNUCLEAR",
    "BASOPHIL": "POLYNUCLEAR",
    "IMMATURE_GRANULOCYTE": "POLYNUCLEAR",
    "LYMPHOCYTE": "MONONUCLEAR",
    "MONOCYTE": "MONONUCLEAR",
}

# The PBC dataset's eight (shared/datasets/pbc): the five leukocyte types, the immature
# granulocytes a differential must not count as neutrophils, and two cells that are no leukocyte
# but that the detector finds: nucleated red cells (erythroblasts) and platelets or their clumps.
EIGHT_CLASSES = (
    "BASOPHIL",
    "EOSINOPHIL",
    "ERYTHROBLAST",
    "IMMATURE_GRANULOCYTE",
    "LYMPHOCYTE",
    "MONOCYTE",
    "NEUTROPHIL",
    "PLATELET",
)

TASK_CLASSES = {"binary": BINARY_CLASSES, "4class": FOUR_CLASSES, "8class": EIGHT_CLASSES}


def binary_group(cell_type):
    """MONONUCLEAR or POLYNUCLEAR for a cell type (a binary network's call is its own group), or ""
    for a label in neither, such as a reviewer's ARTEFACT: no white cell, no group."""
    if cell_type in BINARY_CLASSES:
        return cell_type
    return BINARY_GROUP.get(cell_type, "")


def binary_probabilities(probabilities):
    """Sum per-type probabilities into MONONUCLEAR / POLYNUCLEAR; binary input passes through."""
    if set(probabilities) <= set(BINARY_CLASSES):
        return {name: float(probabilities.get(name, 0.0)) for name in BINARY_CLASSES}
    summed = dict.fromkeys(BINARY_CLASSES, 0.0)
    for name, value in probabilities.items():
        if name in BINARY_GROUP:
            summed[BINARY_GROUP[name]] += float(value)
    return summed
