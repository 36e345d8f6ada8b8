"""The lab's records: samples, their smear images, the cells found in them, and model versions.

Model versions keep the serialized network itself so any worker on any machine can load the
exact bytes that produced a result; every Cell points at the version that classified it.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from classifier.labels import BINARY_CLASSES, binary_group
from webapp import audit
from webapp.counting import Counting, counting_of


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        TRAINING = "training", "Training"
        READY = "ready", "Ready"
        ACTIVE = "active", "Active"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Task(models.TextChoices):
        BINARY = "binary", "Binary (mononuclear / polynuclear)"
        FOUR_CLASS = "4class", "Four cell types"
        EIGHT_CLASS = "8class", "Eight cell types"

    class Source(models.TextChoices):
        BUNDLED = "bundled", "Bundled with the software"
        COMMAND = "command", "Management command"
        SITE = "site", "Retrained from the site"
        ADAPTED = "adapted", "Adapted to this lab"

    architecture = models.CharField(max_length=64)
    task = models.CharField(max_length=16, choices=Task.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.TRAINING)
    failure_reason = models.TextField(blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.COMMAND)

    class_names = models.JSONField(default=list)
    # How a cell becomes network input: size, and whether the network sees the whole field around
    # the cell or a window cut around it (see classifier.preparation).
    input_spec = models.JSONField(default=dict)
    hyperparameters = models.JSONField(default=dict)
    seed = models.IntegerField(null=True, blank=True)
    temperature = models.FloatField(default=1.0)

    dataset_path = models.CharField(max_length=1024, blank=True)
    class_counts = models.JSONField(default=dict)
    dataset_fingerprint = models.CharField(max_length=64, blank=True)
    include_reviewed_cells = models.BooleanField(default=False)
    # The version this one was fine-tuned from on the lab's reviewed cells ("Adapt to this lab").
    adapted_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="adaptations"
    )

    history = models.JSONField(default=list)  # one dict per epoch
    metrics = models.JSONField(default=dict)  # held-out metrics
    progress = models.JSONField(default=dict)  # live progress while training
    training_seconds = models.FloatField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Who pressed Cancel (none: the run stopped at a terminal, or before this was kept), so that the
    # page the run ended on tells that person calmly what they asked for, and alerts everyone else.
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    celery_task_id = models.CharField(max_length=64, blank=True)
    # When the training task last went to the broker (None: not yet; the reconciler sends it), and
    # the last sign of life of the process training it: without one for WORKER_LOST_AFTER, the
    # reconciler marks the version failed so that the one training slot is free again.
    sent_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    model_bytes = models.BinaryField(null=True, blank=True, editable=False)
    model_sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            # Exactly one network may serve at a time; activation swaps inside a transaction.
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="active"), name="one_active_model_version"
            ),
        ]

    def __str__(self):
        return f"v{self.pk} {self.architecture}/{self.task} ({self.status})"

    @property
    def label(self):
        return f"v{self.pk}"

    @property
    def is_active(self):
        return self.status == self.Status.ACTIVE

    @property
    def is_trained(self):
        """It holds a finished network (ready or serving)."""
        return self.status in TRAINED_STATUSES


# The statuses of a version whose training finished: it holds a network and its metrics.
TRAINED_STATUSES = (ModelVersion.Status.READY, ModelVersion.Status.ACTIVE)


class ModelActivation(models.Model):
    """Audit trail of which version served when, and who switched it."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="activations")
    previous_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    activated_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-activated_at"]


def default_target_count():
    return settings.LEUKOSCOPE_TARGET_COUNT


class Sample(models.Model):
    """One specimen as the lab knows it: an accession number, never a patient name.

    A hematologist's signature locks it (webapp.services.sign_off): until a reopening, nothing
    that changes its result is accepted.
    """

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress", "In progress"
        SIGNED = "signed", "Signed"
        REOPENED = "reopened", "Reopened"

    class Photographs(models.TextChoices):
        """What the sample's photographs show, chosen at upload: it decides which cells count."""

        SMEAR_FIELDS = "smear_fields", (
            "Fields of a smear: every white cell found is counted, bar those the edge cuts")
        ONE_CELL_EACH = "one_cell_each", (
            "One white cell each (an analyser's cell pictures, a lab's own crops): the cell in the "
            "middle is counted")

    # The choices in a few words, for sentences ("photographs read as one white cell each").
    PHOTOGRAPHS_IN_SHORT = {Photographs.SMEAR_FIELDS: "fields of a smear",
                            Photographs.ONE_CELL_EACH: "one white cell each"}

    accession_number = models.CharField(max_length=64, db_index=True)
    note = models.TextField(blank=True)
    photographs = models.CharField(max_length=16, choices=Photographs.choices,
                                   default=Photographs.SMEAR_FIELDS)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="samples"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    # How many leukocytes the differential should count before it is signed (100 by default, as a
    # manual differential; 200 where a lab wants tighter ranges).
    target_count = models.PositiveSmallIntegerField(default=default_target_count)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.IN_PROGRESS, db_index=True
    )
    # PROTECT: a signature names its account for good. Deleting the account blanked "Signed by" on
    # the report and the FHIR performer, and left the trail crediting "the worker"; an account
    # that signed or reopened a result is made inactive instead.
    signed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    signed_at = models.DateTimeField(null=True, blank=True)
    # The signer as the report named them when they signed (wording.person): an account renamed
    # since would otherwise rename the signer of a result the LIS filed, unmarked as amended.
    signed_by_name = models.CharField(max_length=320, blank=True)
    # Why it was signed with fewer leukocytes than the target ("" when the target was reached).
    below_target_reason = models.TextField(blank=True)
    # The hematologist signed with unidentified cells left as such (listed apart on the report).
    unidentified_kept = models.BooleanField(default=False)
    times_signed = models.PositiveSmallIntegerField(default=0)  # >1: the report is amended
    reopened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reopened_at = models.DateTimeField(null=True, blank=True)
    reopened_by_name = models.CharField(max_length=320, blank=True)  # as signed_by_name
    reopen_reason = models.TextField(blank=True)
    # The figures its last signature certified (selectors.result_figures), kept with the signature's
    # audit row; and those of the signature the last reopening set aside. An amended result reports
    # again every type that one reported, zero or not, and says what changed: an LIS that filed
    # "Blasts 3.7%" must be told it is now 0, not find the row gone.
    signed_figures = models.JSONField(default=dict, blank=True)
    previously_signed_figures = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("sign_sample", "Can sign a sample's result and reopen a signed one")]

    class Result(models.TextChoices):
        """What the result is, in FHIR's DiagnosticReport status codes, and as the report says it."""

        PRELIMINARY = "preliminary", "NOT SIGNED \u2014 preliminary"
        FINAL = "final", "Final"
        AMENDED = "amended", "Amended"

    @property
    def is_signed(self):
        return self.status == self.Status.SIGNED

    @property
    def one_cell_each(self):
        return self.photographs == self.Photographs.ONE_CELL_EACH

    @property
    def photographs_in_short(self):
        return self.PHOTOGRAPHS_IN_SHORT[self.photographs]

    @property
    def other_photographs(self):
        """The kind its photographs may be read as instead (the sample page offers it)."""
        return next(kind for kind in self.Photographs if kind != self.photographs)

    @property
    def other_photographs_in_short(self):
        return self.PHOTOGRAPHS_IN_SHORT[self.other_photographs]

    @property
    def result(self):
        """Sample.Result: preliminary until signed; amended once signed again after a reopening."""
        if not self.is_signed:
            return self.Result.PRELIMINARY
        return self.Result.AMENDED if self.times_signed > 1 else self.Result.FINAL

    @property
    def amended_because(self):
        """Why a signed result was amended: the reason given when it was last reopened ("" for a
        result that is not an amended one)."""
        return self.reopen_reason if self.result == self.Result.AMENDED else ""

    def __str__(self):
        return self.accession_number

    def get_additional_data(self):
        # django-auditlog stores this with each of the record's audit rows: a sample's timeline
        # (its photographs', cells' and reviews' rows too) is one query (webapp.audit).
        return {"sample_id": self.pk}


class SmearImage(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PROCESSING = "processing", "Processing"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="images")
    image = models.ImageField(upload_to="smears/%Y/%m/%d/")
    original_filename = models.CharField(max_length=255)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    file_size = models.PositiveIntegerField()
    # SHA-256 of the file as sent where it is stored as it came (less its metadata: intake.without_
    # metadata), else of the PNG stored: a copy of the same file is known by it.
    checksum = models.CharField(max_length=64, db_index=True)
    # webapp.intake.fingerprint of its pixels: the same field in another file ("" before 0014).
    fingerprint = models.CharField(max_length=64, blank=True, default="", db_index=True)
    # The fingerprints of its seven other orientations (webapp.intake.oriented_fingerprints), so
    # that a copy turned by software is found in other samples without reading the file again.
    turned_fingerprints = models.JSONField(default=list, blank=True)
    conversion_note = models.CharField(max_length=255, blank=True)

    quality = models.JSONField(default=dict)
    quality_warnings = models.JSONField(default=list)

    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    error = models.TextField(blank=True)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="images"
    )
    # The version the image was last queued for (None: whichever is active when the worker runs),
    # so that photographs added meanwhile, or a "Try again" after a failed re-run, follow the
    # version an administrator moved the sample to rather than the one it is leaving.
    requested_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # What computed the network for this image (classifier.runtimes: int8 weights by default),
    # so a result can be traced to the exact arithmetic behind it.
    inference_runtime = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    # Delivery bookkeeping (webapp.services.liveness, webapp.services.reconciler): when the image
    # was last asked to be classified; when that request last went to the broker (None: not yet,
    # e.g. the broker was down); which task took it and its last sign of life while it works.
    queued_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.sample} / {self.original_filename}"

    def reads_again_calls_of(self, version_id):
        """It is queued, or being classified, again by the version ``version_id`` (or by whichever
        serves, where it asked for none): the cells that run finds replace that version's calls."""
        return (self.status in (self.Status.QUEUED, self.Status.PROCESSING)
                and self.requested_version_id in (None, version_id))

    def get_additional_data(self):
        return {"sample_id": self.sample_id, "image_id": self.pk}


class FingerprintBand(models.Model):
    """One of the bands of a stored photograph's fingerprint (webapp.intake.fingerprint_bands):
    a near copy of the photograph shares at least one, which the index finds among every sample's
    photographs without comparing it with each."""

    image = models.ForeignKey(SmearImage, on_delete=models.CASCADE, related_name="fingerprint_bands")
    key = models.PositiveIntegerField(db_index=True)

    def __str__(self):
        return f"{self.image_id}: {self.key}"


class Cell(models.Model):
    """A leukocyte found in a smear image and the network's call on it.

    Re-classifying an image with another version adds new Cells and keeps the old ones, so the
    history shows what each version said.
    """

    # Labels only a reviewer gives. No training photograph holds a basophil (under 1% of
    # leukocytes), so a network calls one something else; ARTEFACT marks a detection that is no
    # white cell at all (a platelet clump, stain debris), which the formula leaves out.
    BASOPHIL = "BASOPHIL"
    ARTEFACT = "ARTEFACT"

    image = models.ForeignKey(SmearImage, on_delete=models.CASCADE, related_name="cells")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="cells")
    index = models.PositiveIntegerField()  # order within the image for this version

    x0 = models.PositiveIntegerField()
    y0 = models.PositiveIntegerField()
    x1 = models.PositiveIntegerField()
    y1 = models.PositiveIntegerField()
    detection_score = models.FloatField(default=1.0)

    crop = models.ImageField(upload_to="cells/%Y/%m/%d/", blank=True)
    heatmap = models.ImageField(upload_to="heatmaps/%Y/%m/%d/", blank=True)
    # The 240x320 context window the call came from (PNG, lossless): retraining from reviewed cells
    # feeds these back as training images, so they must not be re-cut from a later detector.
    window = models.ImageField(upload_to="windows/%Y/%m/%d/", blank=True)

    predicted_type = models.CharField(max_length=32)
    probabilities = models.JSONField(default=dict)  # class name -> calibrated probability
    confidence = models.FloatField()
    binary_call = models.CharField(max_length=16)  # MONONUCLEAR / POLYNUCLEAR
    needs_review = models.BooleanField(default=False)
    # The second look (classifier.second_look) at an unsure call: the view the call came from, as a
    # factor of the photograph's scale, and the first look's call and confidence ("" and None where
    # no second look was taken, as for every cell classified before there was one).
    view_factor = models.FloatField(default=1.0)
    first_look_type = models.CharField(max_length=32, blank=True)
    first_look_confidence = models.FloatField(null=True, blank=True)

    corrected_type = models.CharField(max_length=32, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    # Set when the review was made on another version's call on this physical cell and carried
    # here when this version re-classified the image: the label is the reviewer's, but they never
    # saw this version's call, so it says nothing about how often this version is right.
    review_carried_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The label the formula counts: the reviewer's where present, else the network's. Stored, not
    # computed, so the history can filter and index on it.
    cell_type = models.CharField(max_length=32)

    # Drawn by a reviewer around a cell the detector missed; the worker classified the box.
    added_by_hand = models.BooleanField(default=False)
    # The photograph's edge cuts the cell: shown and reviewable, left out of the formula unless a
    # reviewer counts it in (count_partial).
    is_partial = models.BooleanField(default=False)
    count_partial = models.BooleanField(default=False)
    # False where the detector outlined no cell on a photograph of one cell and its middle was
    # classified (classifier.pipeline): such a call always waits for a person.
    outlined = models.BooleanField(default=True)
    # The classifier's out-of-distribution score (score / threshold: above 1, unlike the cells it
    # was trained on); None for a network that has none.
    ood_score = models.FloatField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["image", "model_version", "index"], name="one_cell_per_index_and_version"
            ),
        ]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="cell_newest"),
            models.Index(fields=["cell_type", "-created_at"], name="cell_type_newest"),
            models.Index(fields=["model_version", "-created_at"], name="cell_version_newest"),
            models.Index(fields=["needs_review", "-created_at"], name="cell_review_newest"),
            models.Index(fields=["confidence"], name="cell_confidence"),
            # Each box's newest own review, read in index order with no table access: the models
            # page's adapt card counts a year's reviewed cells on every view (adaptation_counts).
            models.Index(
                fields=["image", "x0", "y0", "x1", "y1", "-reviewed_at", "-id", "corrected_type"],
                name="cell_reviewed_newest",
                condition=~Q(corrected_type="") & Q(review_carried_from__isnull=True) & ~Q(window=""),
            ),
            # The few flagged calls no one has reviewed yet, by photograph: the review work lists
            # (selectors.AWAITING_REVIEW) find their samples without reading the table.
            models.Index(fields=["image", "model_version"], name="cell_awaiting_review",
                         condition=Q(needs_review=True, corrected_type="")),
            # The rare calls of a group alone (the binary network's), by photograph: the list of
            # samples waiting for a signature leaves out those holding them beside typed calls
            # (selectors.GROUP_ONLY), and would otherwise read every cell of every unsigned sample.
            models.Index(fields=["image", "model_version"], name="cell_group_only",
                         condition=Q(cell_type__in=list(BINARY_CLASSES))),
            # Each version's reviewed calls, the type given and whether the call was flagged, for the
            # models list's agreement and a version's page; with the id their counts read, so that
            # the index alone answers.
            models.Index(
                fields=["model_version", "predicted_type", "corrected_type", "needs_review", "id"],
                name="cell_own_reviews_by_version",
                condition=~Q(corrected_type="") & Q(review_carried_from__isnull=True),
            ),
        ]

    @property
    def box(self):
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def predicted_binary_call(self):
        """The network's mononuclear / polynuclear call (its leukocyte types' probabilities
        summed), or "" where its call is no leukocyte: summed over the leukocyte types alone, a
        platelet's few percent would make it "polynuclear"."""
        return self.binary_call if binary_group(self.predicted_type) else ""

    @property
    def is_counted_in(self):
        """Whole, or cut by the edge and counted in by a reviewer (the opposite of
        selectors.PARTIAL_LEFT_OUT)."""
        return not self.is_partial or self.count_partial

    @property
    def in_differential(self):
        """Whole or counted in, and of a type the differential counts (not a platelet, artefact,
        erythroblast or unidentified cell): the row-by-row twin of selectors.IN_DIFFERENTIAL.
        Whether its version is still the photograph's is is_superseded's to say."""
        return self.is_counted_in and counting_of(self.cell_type) is Counting.DIFFERENTIAL

    @property
    def is_superseded(self):
        """Another version has classified the cell's image since: the formula counts its call instead."""
        return self.model_version_id != self.image.model_version_id

    @property
    def awaits_another_reading(self):
        """Its photograph is queued, or being classified, again by the version that called it (the
        photographs read another way, a re-classification or a "Try again" with that version): the
        cells that run finds take this version's place, and one it does not find again is deleted,
        with whatever a person gave it. Another version's run keeps this call and carries its label."""
        return self.image.reads_again_calls_of(self.model_version_id)

    def __str__(self):
        return f"cell {self.pk}"

    def get_additional_data(self):
        # Read by id, not through self.image: a cell's audit row may be written after its
        # photograph's row is gone.
        sample_id = SmearImage.objects.filter(pk=self.image_id).values_list("sample_id", flat=True).first()
        return {"sample_id": sample_id, "image_id": self.image_id, "cell_id": self.pk}


class CellReview(models.Model):
    """Every relabelling, kept even when a later review overrides it."""

    cell = models.ForeignKey(Cell, on_delete=models.CASCADE, related_name="reviews")
    from_type = models.CharField(max_length=32)
    to_type = models.CharField(max_length=32)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-reviewed_at"]

    def __str__(self):
        return f"review of cell {self.cell_id}"

    def get_additional_data(self):
        # A review is written with its cell and photograph in hand (services.review): read them
        # there rather than once more per review; by id otherwise.
        if CellReview.cell.is_cached(self) and Cell.image.is_cached(self.cell):
            sample_id = self.cell.image.sample_id
        else:
            sample_id = (Cell.objects.filter(pk=self.cell_id).values_list("image__sample_id", flat=True)
                         .first())
        return {"sample_id": sample_id, "cell_id": self.cell_id}


class AddedCellRequest(models.Model):
    """A box a reviewer drew around a cell the detector missed, waiting for the worker to classify
    it (webapp.services.added_cells). Once done it points at the Cell made from it: the task adds
    the cell only while the request has none, so a message delivered twice adds one cell."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for the classifier"
        DONE = "done", "Added"
        FAILED = "failed", "Failed"

    image = models.ForeignKey(SmearImage, on_delete=models.CASCADE, related_name="added_cell_requests")
    x0 = models.PositiveIntegerField()
    y0 = models.PositiveIntegerField()
    x1 = models.PositiveIntegerField()
    y1 = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    error = models.TextField(blank=True)
    cell = models.OneToOneField(Cell, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)  # None: the broker was down, not sent yet
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    @property
    def box(self):
        return (self.x0, self.y0, self.x1, self.y1)


audit.register_models(Sample, SmearImage, Cell, CellReview)


class ApiToken(models.Model):
    """A key a program (the lab's information system) reads the JSON API with in place of a sign-in,
    sent as `Authorization: Bearer <key>` (webapp.services.api_tokens). Only the key's SHA-256 is
    kept: it is shown once, when made (the Django admin or manage.py api_token create). It reads what
    its account may read, and nothing else: a key never changes anything."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What uses it, e.g. the lab's information system.")
    key_sha256 = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Who revoked it, and why, on the key itself as on its audit row (services.api_tokens.revoke_tokens).
    # None where no account did (a command, a shell) or the trail did not say (keys revoked before
    # this was kept). SET_NULL as for who trained or activated a network: an account these name is
    # made inactive, not deleted (admin.accounts_on_record).
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoke_reason = models.TextField(blank=True)
    # The admin's add form carries a token of its own, used once: the form sent again (a script's
    # double POST, a resent page) finds its key already made here and makes no second one.
    made_by_form = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} ({self.user})"
