"""The admin's form that makes an API key carries a one-use token: the form sent twice (a script's
double POST, a page sent again) made a second live key, of which one was never used."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("webapp", "0024_index_cells_awaiting_review")]

    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="made_by_form",
            field=models.CharField(blank=True, editable=False, max_length=64, null=True, unique=True),
        ),
    ]
