"""An index on the sample id every audit row carries (webapp.audit), which the sample's timeline
filters on: without it the timeline reads the whole audit table, which only grows.

PostgreSQL only (production): there the lookup is ``additional_data -> 'sample_id'``, an
expression an index can match. SQLite wraps the same lookup in a CASE on the value's JSON type,
which no expression index matches; the embedded database serves a lab too small to need one.
"""

from django.db import migrations

INDEX = "webapp_auditlog_sample_id"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON auditlog_logentry ((additional_data -> 'sample_id'))"
        )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):

    dependencies = [
        ("webapp", "0011_addcell_added_cell_request"),
        ("auditlog", "__latest__"),
    ]

    operations = [migrations.RunPython(create_index, drop_index)]
