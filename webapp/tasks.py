"""Celery tasks: thin, idempotent wrappers that take ids and call one service each."""

from celery import shared_task


@shared_task(name="webapp.tasks.classify_image", acks_late=True)
def classify_image(image_id, model_version_id=None):
    from webapp.services.classification import classify_smear_image

    classify_smear_image(image_id, model_version_id=model_version_id)


@shared_task(name="webapp.tasks.train_model_version", acks_late=True)
def train_model_version(version_id):
    from webapp.services.training import run_training

    run_training(version_id)
