"""The admin role deletes samples and their photographs (webapp.delete_sample, delete_smearimage), on
the sample page as in the Django admin. Staff status alone used to delete any sample on the sample
page, while an account with staff status and no role is meant to change nothing (a monitoring
account that reads /healthz, say)."""

import importlib

from django.db import migrations

roles = importlib.import_module("webapp.migrations.0009_roles")

DELETING = {"admin": [("webapp", "delete_sample"), ("webapp", "delete_smearimage")]}


def grant_deleting(apps, schema_editor):
    roles.grant(apps, DELETING)


def withdraw_deleting(apps, schema_editor):
    group = apps.get_model("auth", "Group").objects.filter(name="admin").first()
    if group:
        group.permissions.remove(*group.permissions.filter(
            content_type__app_label="webapp", codename__in=["delete_sample", "delete_smearimage"]))


class Migration(migrations.Migration):
    dependencies = [("webapp", "0021_sample_photographs_and_unoutlined_cells")]

    operations = [migrations.RunPython(grant_deleting, withdraw_deleting)]
