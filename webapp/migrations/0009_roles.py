"""The lab's roles as Django groups: technologist (upload, review), hematologist (review, sign,
reopen), admin (users, retraining, model versions). An administrator also needs "staff status"
for the staff-only pages; a group cannot grant that."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLES = {
    "technologist": [
        ("webapp", "add_sample"), ("webapp", "view_sample"), ("webapp", "add_smearimage"),
        ("webapp", "view_smearimage"), ("webapp", "view_cell"), ("webapp", "change_cell"),
    ],
    "hematologist": [
        ("webapp", "add_sample"), ("webapp", "view_sample"), ("webapp", "add_smearimage"),
        ("webapp", "view_smearimage"), ("webapp", "view_cell"), ("webapp", "change_cell"),
        ("webapp", "sign_sample"),
    ],
    "admin": [
        ("auth", "add_user"), ("auth", "change_user"), ("auth", "view_user"),
        ("auth", "view_group"), ("webapp", "view_modelversion"), ("webapp", "add_modelversion"),
        ("webapp", "change_modelversion"), ("webapp", "view_sample"), ("webapp", "view_cell"),
    ],
}


def grant(apps, roles):
    """Give each role (group name -> [(app label, codename)]) these permissions, creating the
    groups and, first, the permissions: Django creates them only after all migrations."""
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in roles.items():
        group, _ = Group.objects.get_or_create(name=role)
        for app_label, codename in codenames:
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


def create_roles(apps, schema_editor):
    grant(apps, ROLES)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("webapp", "0008_sign_off_and_cell_marks"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
