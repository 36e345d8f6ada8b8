"""LOINC codes of the figures a sample's report sends to a laboratory information system.

Which family: LOINC has three codes for most cells of a differential, "by Automated count" (an
analyser's impedance or flow count: 770-8 for neutrophils), "by Manual count" (769-0, 737-7, ...)
and one with no method (26511-6, 26478-8, ...). A digital morphology differential is neither an
analyser's count nor a count at the microscope: a network pre-classifies cells photographed on a
smear and a person confirms or relabels them, as CellaVision-type systems do, whose results labs
file under their manual differential. LOINC's own "Manual Differential panel - Blood" (24318-8)
lists its member cells with the method-less codes (30180-4 basophils, 26446-5 blasts, 26450-7
eosinophils, ...), so the report uses that panel and that family: it claims no method it did not
use, and the method is said in words on each Observation (see webapp.reports.fhir).

Sources checked: loinc.org's page of panel 24318-8 (its members 30180-4, 26446-5,
26450-7); loinc.org's page of 58413-6, whose mapping guidance names 19048-8 as the method-less NRBC
term; other codes were checked against several published LIS mapping tables and value sets, which
agree on each code and its name unless a line says otherwise. Codes marked UNVERIFIED could not be
confirmed against loinc.org itself and should be checked by the lab's LIS team before go-live.
Types without a code (a lab's own class, MONONUCLEAR) are sent with a text code only.
"""

from dataclasses import dataclass

SYSTEM = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class Loinc:
    code: str
    display: str  # LOINC's long common name


# The DiagnosticReport's code. 24318-8 "Manual Differential panel - Blood" (loinc.org). Not
# 57023-4 "Auto Differential panel - Blood", which is an analyser's differential.
PANEL = Loinc("24318-8", "Manual Differential panel - Blood")

# Cell type (webapp.counting) -> the code of its share of the leukocytes, in percent.
PERCENT = {
    # Method-less; 770-8 is the automated count, 769-0 the manual segmented-neutrophil count.
    # (26511-0, sometimes quoted, is not this code.)
    "NEUTROPHIL": Loinc("26511-6", "Neutrophils/100 leukocytes in Blood"),
    # Method-less; 736-9 automated, 737-7 manual.
    "LYMPHOCYTE": Loinc("26478-8", "Lymphocytes/100 leukocytes in Blood"),
    # Method-less; 5905-5 automated, 744-3 manual.
    "MONOCYTE": Loinc("26485-3", "Monocytes/100 leukocytes in Blood"),
    # Method-less, a member of panel 24318-8 (loinc.org); 713-8 automated, 714-6 manual.
    "EOSINOPHIL": Loinc("26450-7", "Eosinophils/100 leukocytes in Blood"),
    # Method-less, a member of panel 24318-8 (loinc.org); 706-2 automated, 707-0 manual.
    "BASOPHIL": Loinc("30180-4", "Basophils/100 leukocytes in Blood"),
    # Method-less, a member of panel 24318-8 (loinc.org); 709-6 is the manual count.
    "BLAST": Loinc("26446-5", "Blasts/100 leukocytes in Blood"),
    # UNVERIFIED: two mapping tables give 38518-7 as the method-less code and 71695-1 as the
    # analyser's (Sysmex IG%) "by Automated count"; a third has them the other way round.
    "IMMATURE_GRANULOCYTE": Loinc("38518-7", "Immature granulocytes/100 leukocytes in Blood"),
    # "Variant lymphocytes" is LOINC's current name; older releases said "Atypical lymphocytes".
    "REACTIVE_LYMPHOCYTE": Loinc("13046-8", "Variant lymphocytes/100 leukocytes in Blood"),
    "PLASMA_CELL": Loinc("13047-6", "Plasma cells/100 leukocytes in Blood"),
    # A binary network's polynuclear share. UNVERIFIED (seen in one LOINC value set only).
    # MONONUCLEAR has no code we could confirm: it goes as text.
    "POLYNUCLEAR": Loinc("34999-3", "Polymorphonuclear cells/100 leukocytes in Blood"),
}

# Cell type -> the code of its count per 100 leukocytes (reported beside the differential).
PER_100 = {
    # Method-less (loinc.org: 58413-6 is the automated count); 18309-5 is the manual one.
    "ERYTHROBLAST": Loinc("19048-8", "Nucleated erythrocytes/100 leukocytes in Blood"),
    # UNVERIFIED against loinc.org (found in LOINC value-set listings).
    "SMUDGE_CELL": Loinc("34992-8", "Smudge cells/100 leukocytes in Blood"),
}

# UCUM units of the two kinds of figure.
PERCENT_UNIT = "%"
PER_100_UNIT = "/100{WBCs}"


def code_for(name, kind):
    """The LOINC code of a type's figure ("percent" or "per_100"), or None."""
    return (PERCENT if kind == "percent" else PER_100).get(name)
