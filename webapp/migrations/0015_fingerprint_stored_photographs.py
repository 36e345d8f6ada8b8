from django.db import migrations

from webapp.intake import fingerprint, measure_stored, refuse_without_media_folder


def fingerprint_stored_photographs(apps, schema_editor):
    """Photographs stored before 0014 have no fingerprint, so a re-encoded copy of one uploaded
    later was counted again; each gets the one its file gives (none where the file is gone)."""
    smear_images = apps.get_model("webapp", "SmearImage").objects.filter(fingerprint="")
    refuse_without_media_folder(smear_images.count())
    for photograph in smear_images.only("pk", "image").iterator(chunk_size=200):
        taken = measure_stored(photograph.image, fingerprint)
        if taken:
            smear_images.filter(pk=photograph.pk).update(fingerprint=taken)


class Migration(migrations.Migration):

    dependencies = [
        ("webapp", "0014_smearimage_fingerprint"),
    ]

    operations = [
        migrations.RunPython(fingerprint_stored_photographs, migrations.RunPython.noop, elidable=True),
    ]
