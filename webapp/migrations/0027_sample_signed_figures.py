"""A signature keeps a copy of the figures it certified, and a reopening the figures it set aside:
an amended result dropped a type it had reported (a blast relabelled), so an LIS that filed the
first result kept "Blasts 3.7%" as final."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("webapp", "0026_signer_accounts_protected")]

    operations = [
        migrations.AddField(
            model_name="sample",
            name="signed_figures",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="sample",
            name="previously_signed_figures",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
