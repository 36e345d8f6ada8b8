"""Two partial indexes of the reviews made on each cell (not carried from another version's call),
for the models page, which reads them on every view: on a busy lab's year (half a million reviewed
cells of 2.5 million) reading them from the table took a second and a half.

cell_reviewed_newest: each box's reviews, newest first, with the reviewed type, for the "Adapt to
this lab" card's counts (selectors.adaptation_counts). cell_own_reviews_by_version: each version's
reviewed calls, the type given and whether the call was flagged, for the list's review agreement
and a version's page."""

from django.db import migrations, models


# A review made on the cell itself, not carried to it from another version's call.
OWN_REVIEW = models.Q(~models.Q(corrected_type=""), review_carried_from__isnull=True)


class Migration(migrations.Migration):
    dependencies = [("webapp", "0022_admin_deletes_samples")]

    operations = [
        migrations.AddIndex(
            model_name="cell",
            index=models.Index(
                condition=OWN_REVIEW & ~models.Q(window=""),
                fields=["image", "x0", "y0", "x1", "y1", "-reviewed_at", "-id", "corrected_type"],
                name="cell_reviewed_newest",
            ),
        ),
        migrations.AddIndex(
            model_name="cell",
            index=models.Index(
                condition=OWN_REVIEW,
                fields=["model_version", "predicted_type", "corrected_type", "needs_review", "id"],
                name="cell_own_reviews_by_version",
            ),
        ),
    ]
