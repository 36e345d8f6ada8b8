from django.db import migrations, models


def name_existing_signers(apps, schema_editor):
    """Signatures made before names were kept take their accounts' names as they are now, the
    nearest there is to how the report named them: from here on a rename leaves them be."""
    Sample = apps.get_model("webapp", "Sample")
    for role in ("signed_by", "reopened_by"):
        named = Sample.objects.filter(**{f"{role}__isnull": False}).select_related(role)
        for sample in named.iterator(chunk_size=500):
            user = getattr(sample, role)
            full_name = f"{user.first_name} {user.last_name}".strip()
            setattr(sample, f"{role}_name", full_name or user.username)
            sample.save(update_fields=[f"{role}_name"])


class Migration(migrations.Migration):

    dependencies = [
        ("webapp", "0028_index_cells_called_by_group_alone"),
    ]

    operations = [
        migrations.AddField(
            model_name="sample",
            name="reopened_by_name",
            field=models.CharField(blank=True, max_length=320),
        ),
        migrations.AddField(
            model_name="sample",
            name="signed_by_name",
            field=models.CharField(blank=True, max_length=320),
        ),
        migrations.RunPython(name_existing_signers, migrations.RunPython.noop, elidable=True),
    ]
