"""The admin role no longer holds "delete API key": keys are revoked and stay on record
(webapp.admin.ApiTokenAdmin refuses deletion to everyone), so migration 0019's grant of it was a
permission nothing honours, and a role's list should say what the role can do."""

from django.db import migrations


def withdraw_delete(apps, schema_editor):
    group = apps.get_model("auth", "Group").objects.filter(name="admin").first()
    if group:
        group.permissions.remove(*group.permissions.filter(
            content_type__app_label="webapp", codename="delete_apitoken"))


def restore_delete(apps, schema_editor):
    group = apps.get_model("auth", "Group").objects.filter(name="admin").first()
    permission = apps.get_model("auth", "Permission").objects.filter(
        content_type__app_label="webapp", codename="delete_apitoken").first()
    if group and permission:
        group.permissions.add(permission)


class Migration(migrations.Migration):
    dependencies = [("webapp", "0019_admin_manages_api_keys")]

    operations = [migrations.RunPython(withdraw_delete, restore_delete)]
