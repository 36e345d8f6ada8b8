from django.db import migrations

from webapp.intake import fingerprint_bands, measure_stored, oriented_fingerprints, refuse_without_media_folder


def index_stored_fingerprints(apps, schema_editor):
    """Photographs stored before 0016 have no bands and no turned fingerprints, so another sample's
    copy of one was found only where their fingerprints were equal: re-encoded or turned, it went
    without a warning. Each gets them from its file; one whose file is gone, the bands of the
    fingerprint it has."""
    smear_images = apps.get_model("webapp", "SmearImage").objects
    band = apps.get_model("webapp", "FingerprintBand")
    refuse_without_media_folder(smear_images.count())
    for photograph in smear_images.only("pk", "image", "fingerprint").iterator(chunk_size=200):
        upright, turned = measure_stored(photograph.image, oriented_fingerprints) or ("", ())
        taken = photograph.fingerprint or upright
        if not taken:
            continue
        smear_images.filter(pk=photograph.pk).update(fingerprint=taken, turned_fingerprints=list(turned))
        band.objects.bulk_create(band(image_id=photograph.pk, key=key) for key in fingerprint_bands(taken))


class Migration(migrations.Migration):

    dependencies = [
        ("webapp", "0016_smearimage_fingerprint_bands"),
    ]

    operations = [
        migrations.RunPython(index_stored_fingerprints, migrations.RunPython.noop, elidable=True),
    ]
