"""A partial index of the calls of a group alone (the binary network's mononuclear / polynuclear),
by photograph: the list of samples waiting for a signature leaves out those holding such calls beside
typed ones, and without it read every cell of every unsigned sample (2.5 s a page on bench/scale.py's
year)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("webapp", "0027_sample_signed_figures")]

    operations = [
        migrations.AddIndex(
            model_name="cell",
            index=models.Index(
                condition=models.Q(cell_type__in=["MONONUCLEAR", "POLYNUCLEAR"]),
                fields=["image", "model_version"],
                name="cell_group_only",
            ),
        ),
    ]
