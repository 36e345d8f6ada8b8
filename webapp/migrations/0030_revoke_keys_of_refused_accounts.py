"""Revoke the API keys in force of accounts that may no longer hold one (inactive, or with a role,
staff or superuser status or a permission of their own). Until now such a key was only stopped while
its account stayed so, and worked again once the change was undone; from now on the change revokes it
(services.api_tokens.revoke_keys_of_refused_account). Without this, a key stopped before the upgrade,
by making its account inactive, would come back when the account is made active again."""

from django.db import migrations
from django.db.models import Q
from django.utils import timezone


def revoke_keys_of_refused_accounts(apps, schema_editor):
    ApiToken = apps.get_model("webapp", "ApiToken")
    refused = (Q(user__is_active=False) | Q(user__is_staff=True) | Q(user__is_superuser=True)
               | Q(user__groups__isnull=False) | Q(user__user_permissions__isnull=False))
    stopped = ApiToken.objects.filter(refused, revoked_at__isnull=True).values("pk")
    ApiToken.objects.filter(pk__in=stopped).update(revoked_at=timezone.now())


class Migration(migrations.Migration):
    dependencies = [("webapp", "0029_sample_signer_names")]

    operations = [migrations.RunPython(revoke_keys_of_refused_accounts, migrations.RunPython.noop)]
