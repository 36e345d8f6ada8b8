"""The admin role makes, lists and revokes the lab's API keys (webapp.ApiToken), as it manages the
accounts they belong to."""

import importlib

from django.db import migrations

roles = importlib.import_module("webapp.migrations.0009_roles")

API_KEYS = {"admin": [("webapp", "add_apitoken"), ("webapp", "view_apitoken"),
                      ("webapp", "delete_apitoken")]}


def grant_api_keys(apps, schema_editor):
    roles.grant(apps, API_KEYS)


def withdraw_api_keys(apps, schema_editor):
    group = apps.get_model("auth", "Group").objects.filter(name="admin").first()
    if group:
        group.permissions.remove(*group.permissions.filter(content_type__model="apitoken"))


class Migration(migrations.Migration):
    dependencies = [("webapp", "0018_api_token")]

    operations = [migrations.RunPython(grant_api_keys, withdraw_api_keys)]
