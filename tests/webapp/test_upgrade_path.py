"""A lab's database made by an older release, upgraded by every migration since: nothing stored is
lost, the photographs get what the newer migrations read from their files, and the signed result
still leaves for the LIS. The oldest state is 0012, the last migration of the releases of December 2
(dac417c); an upgrade from it was also run by hand on real smears (README, Upgrading)."""

import io
from datetime import timedelta

import numpy as np
import pytest
from django.core.management.color import no_style
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone
from PIL import Image

pytestmark = pytest.mark.django_db(transaction=True)

OLDER_RELEASE = [("webapp", "0012_audit_sample_index")]


def migrate_to(targets):
    """Migrate the test database to ``targets``; the models as they stood there."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps


def newest():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


@pytest.fixture
def newest_schema_afterwards(transactional_db):
    """The test database at the newest migration after the test, whatever failed in it. A migration
    that fails on the older release's rows (what this test is for) left the schema part-way, and
    every later test in the process failed on a missing column, burying the one failure that says
    why. The rows are cleared first: an empty database migrates forward as it does at creation."""
    yield
    executor = MigrationExecutor(connection)
    if executor.migration_plan(newest()):
        tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
        connection.ops.execute_sql_flush(connection.ops.sql_flush(no_style(), tables, allow_cascade=True))
        executor.migrate(newest())


def smear_jpeg():
    pixels = np.random.default_rng(7).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def a_signed_sample_as_the_older_release_stored_it(apps, media_root):
    user = apps.get_model("auth", "User").objects.create(username="haem-old")
    version = apps.get_model("webapp", "ModelVersion").objects.create(
        architecture="leukonet", task="4class", status="active", source="bundled",
        class_names=["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"], model_sha256="a" * 64)
    sample = apps.get_model("webapp", "Sample").objects.create(
        accession_number="OLD-0001", status="signed", signed_by=user, signed_at=timezone.now(),
        times_signed=1, below_target_reason="few cells", created_by=user)
    # Stored under the uploaded file's name, as releases before 2026-12-06 did.
    name = "smears/2026/12/02/Patient_Name_field1.jpg"
    (media_root / name).parent.mkdir(parents=True, exist_ok=True)
    (media_root / name).write_bytes(smear_jpeg())
    image = apps.get_model("webapp", "SmearImage").objects.create(
        sample=sample, image=name, original_filename="Patient_Name_field1.jpg", width=160, height=120,
        file_size=(media_root / name).stat().st_size, checksum="b" * 64, status="done",
        model_version=version)
    cell_model = apps.get_model("webapp", "Cell")
    for index, kind in enumerate(("NEUTROPHIL", "LYMPHOCYTE")):
        cell = cell_model.objects.create(
            image=image, model_version=version, index=index, x0=10 + 60 * index, y0=10,
            x1=50 + 60 * index, y1=50, predicted_type=kind, probabilities={kind: 0.9}, confidence=0.9,
            cell_type=kind, binary_call="POLYNUCLEAR" if kind == "NEUTROPHIL" else "MONONUCLEAR")
    apps.get_model("webapp", "CellReview").objects.create(
        cell=cell, from_type="LYMPHOCYTE", to_type="LYMPHOCYTE", reviewed_by=user)
    return sample.pk


def test_a_database_of_an_older_release_keeps_everything_through_every_migration(
    newest_schema_afterwards, client, settings, tmp_path
):
    settings.MEDIA_ROOT = str(tmp_path)
    pk = a_signed_sample_as_the_older_release_stored_it(migrate_to(OLDER_RELEASE), tmp_path)
    apps = migrate_to(newest())
    models = {name: apps.get_model("webapp", name) for name in
              ("Sample", "SmearImage", "Cell", "CellReview", "ModelVersion", "FingerprintBand")}
    assert {name: model.objects.count() for name, model in models.items()} == {
        "Sample": 1, "SmearImage": 1, "Cell": 2, "CellReview": 1, "ModelVersion": 1, "FingerprintBand": 17}

    from webapp.models import Sample, SmearImage

    sample = Sample.objects.get(pk=pk)
    assert (sample.status, sample.times_signed, sample.signed_by.username) == ("signed", 1, "haem-old")
    assert sample.photographs == Sample.Photographs.SMEAR_FIELDS and sample.signed_figures == {}
    image = SmearImage.objects.get(sample=sample)
    assert image.fingerprint and len(image.turned_fingerprints) == 7  # read from its file by 0015, 0017
    assert list(image.cells.values_list("outlined", flat=True)) == [True, True]

    client.force_login(sample.signed_by)
    bundle = client.get(reverse("lab:api-sample-fhir", args=[pk]))
    assert bundle.status_code == 200, bundle.content
    assert bundle.json()["entry"][0]["resource"]["status"] == "final"
    assert client.get(reverse("lab:sample-report-pdf", args=[pk])).status_code == 200
    assert client.get(f"/media/{image.image.name}").status_code == 200


def test_the_upgrade_revokes_the_keys_of_accounts_that_may_hold_none(newest_schema_afterwards):
    """Before, a key of an inactive account (made so to stop a leaked key), or of one with a role or a
    permission, was only stopped while that lasted; once the change was undone it worked again. The
    upgrade revokes such keys, so that undoing the change after it brings none back."""
    apps = migrate_to([("webapp", "0029_sample_signer_names")])
    User, ApiToken = apps.get_model("auth", "User"), apps.get_model("webapp", "ApiToken")
    accounts = {
        "reader": User.objects.create(username="reader"),
        "inactive": User.objects.create(username="inactive", is_active=False),
        "staff": User.objects.create(username="staff", is_staff=True),
        "technologist": User.objects.create(username="technologist"),
        "signer": User.objects.create(username="signer"),
    }
    accounts["technologist"].groups.add(apps.get_model("auth", "Group").objects.get(name="technologist"))
    accounts["signer"].user_permissions.add(
        apps.get_model("auth", "Permission").objects.get(codename="sign_sample"))
    earlier = timezone.now() - timedelta(days=3)
    for name, account in accounts.items():
        ApiToken.objects.create(user=account, name=name, key_sha256=name.ljust(64, "0"))
    ApiToken.objects.create(user=accounts["inactive"], name="long revoked", key_sha256="x" * 64,
                            revoked_at=earlier)

    apps = migrate_to(newest())

    revoked = dict(apps.get_model("webapp", "ApiToken").objects.values_list("name", "revoked_at"))
    assert revoked["reader"] is None and revoked["long revoked"] == earlier
    assert all(revoked[name] is not None for name in ("inactive", "staff", "technologist", "signer"))


def test_the_upgrade_names_each_signature_as_its_account_is_named_now(newest_schema_afterwards):
    """Signatures made before the signer's name was kept with them take their accounts' names at the
    upgrade (full name, else user name), so that the report reads as before; renaming later leaves
    them be."""
    apps = migrate_to([("webapp", "0028_index_cells_called_by_group_alone")])
    User, Sample = apps.get_model("auth", "User"), apps.get_model("webapp", "Sample")
    signer = User.objects.create(username="ada", first_name="Ada", last_name="Lovelace")
    reopener = User.objects.create(username="hopper")
    signed = Sample.objects.create(accession_number="H26-0501", status="signed", signed_by=signer,
                                   signed_at=timezone.now(), times_signed=1)
    reopened = Sample.objects.create(accession_number="H26-0502", status="reopened", signed_by=signer,
                                     signed_at=timezone.now(), times_signed=1, reopened_by=reopener,
                                     reopened_at=timezone.now(), reopen_reason="recount")
    unsigned = Sample.objects.create(accession_number="H26-0503")

    apps = migrate_to(newest())

    Sample = apps.get_model("webapp", "Sample")
    names = {sample.pk: (sample.signed_by_name, sample.reopened_by_name) for sample in Sample.objects.all()}
    assert names == {signed.pk: ("Ada Lovelace", ""), reopened.pk: ("Ada Lovelace", "hopper"),
                     unsigned.pk: ("", "")}


def test_the_upgrade_names_who_revoked_each_key_where_the_trail_says(newest_schema_afterwards):
    """Who revoked a key, and why, was only in the audit trail; the upgrade copies both onto each key
    revoked before, from its revocation's row. A row naming no account (a command, a shell) and a
    key revoked with no row (by 0030) leave the key naming nobody: the admin says "no account (see
    the reason)" of the first, "unknown" of the second."""
    apps = migrate_to([("webapp", "0030_revoke_keys_of_refused_accounts")])
    User, ApiToken = apps.get_model("auth", "User"), apps.get_model("webapp", "ApiToken")
    LogEntry = apps.get_model("auditlog", "LogEntry")
    kind, _ = apps.get_model("contenttypes", "ContentType").objects.get_or_create(
        app_label="webapp", model="apitoken")
    root, lis = User.objects.create(username="root"), User.objects.create(username="lis")
    earlier = timezone.now() - timedelta(days=2)
    keys = {name: ApiToken.objects.create(user=lis, name=name, key_sha256=name.ljust(64, "0"),
                                          revoked_at=None if name == "active" else earlier)
            for name in ("in the admin", "by a command", "by 0030", "active")}

    def row(key, action, actor, note):
        LogEntry.objects.create(
            content_type=kind, object_pk=str(key.pk), object_id=key.pk, object_repr=key.name, action=action,
            actor=actor, changes={"revoked_at": ["None", str(earlier)]}, additional_data={"note": note})

    row(keys["in the admin"], 0, None, "a create row, which names no revocation")
    row(keys["in the admin"], 1, root, "Revoked in the admin.")
    row(keys["by a command"], 1, None, "Revoked with manage.py api_token revoke.")

    apps = migrate_to(newest())

    ApiToken = apps.get_model("webapp", "ApiToken")
    after = {key.name: (key.revoked_by_id, key.revoke_reason, key.revoked_at)
             for key in ApiToken.objects.all()}
    assert after == {
        "in the admin": (root.pk, "Revoked in the admin.", earlier),
        "by a command": (None, "Revoked with manage.py api_token revoke.", earlier),
        "by 0030": (None, "", earlier),
        "active": (None, "", None),
    }
