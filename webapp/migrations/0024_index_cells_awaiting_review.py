"""A partial index of the flagged calls no one has reviewed yet (a few thousand of a busy lab's 2.5
million cells), by photograph and version: the sample list's "Awaiting review" read the whole cell
table to find their samples (1.2 s a page on bench/scale.py's year)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("webapp", "0023_index_own_reviews")]

    operations = [
        migrations.AddIndex(
            model_name="cell",
            index=models.Index(
                condition=models.Q(needs_review=True, corrected_type=""),
                fields=["image", "model_version"],
                name="cell_awaiting_review",
            ),
        ),
    ]
