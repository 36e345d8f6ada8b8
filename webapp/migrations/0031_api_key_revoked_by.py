"""Who revoked each API key, and why, kept on the key (until now only in the audit trail). A key
revoked before takes both from its revocation's audit row where the trail has one; its actor may be
none (a command, a shell), and keys revoked by 0030 have no row: they stay without, shown as
"unknown"."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

UPDATE = 1  # auditlog's LogEntry.Action.UPDATE


def name_who_revoked_from_the_trail(apps, schema_editor):
    ApiToken = apps.get_model("webapp", "ApiToken")
    LogEntry = apps.get_model("auditlog", "LogEntry")
    kind = apps.get_model("contenttypes", "ContentType").objects.filter(
        app_label="webapp", model="apitoken").first()
    if kind is None:  # a database that never had a key
        return
    revoked = {str(token.pk): token for token in ApiToken.objects.filter(revoked_at__isnull=False)}
    rows = (LogEntry.objects.filter(content_type=kind, action=UPDATE, object_pk__in=list(revoked))
            .order_by("timestamp", "pk"))
    named = {}
    for row in rows.iterator(chunk_size=500):
        # A key is revoked once (revoke_tokens' conditional update): its first such row is that.
        if "revoked_at" in (row.changes or {}) and row.object_pk not in named:
            token = named[row.object_pk] = revoked[row.object_pk]
            token.revoked_by_id = row.actor_id
            token.revoke_reason = (row.additional_data or {}).get("note", "")
    ApiToken.objects.bulk_update(named.values(), ["revoked_by", "revoke_reason"], batch_size=500)


class Migration(migrations.Migration):

    dependencies = [
        ("webapp", "0030_revoke_keys_of_refused_accounts"),
        ("auditlog", "__latest__"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="revoke_reason",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="apitoken",
            name="revoked_by",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                    related_name="+", to=settings.AUTH_USER_MODEL),
        ),
        migrations.RunPython(name_who_revoked_from_the_trail, migrations.RunPython.noop),
    ]
