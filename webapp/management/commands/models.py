from django.core.management.base import BaseCommand
from django.db.models import Count

from webapp.management.commands.train import held_out_metrics
from webapp.models import ModelVersion


class Command(BaseCommand):
    help = "List model versions: status, architecture, task, held-out accuracy, cells classified."

    def handle(self, *args, **options):
        versions = (
            ModelVersion.objects.defer("model_bytes").annotate(cell_count=Count("cells")).order_by("pk")
        )
        if not versions:
            self.stdout.write(
                "No model versions yet: run `manage.py ensure_default_model` or `manage.py train`."
            )
            return
        header = (
            f"{'id':>4}  {'status':<9}  {'architecture':<12}  {'task':<6}  {'accuracy':>13}  "
            f"{'created':<16}  {'cells':>7}"
        )
        self.stdout.write(header)
        for version in versions:
            title, metrics = held_out_metrics(version.metrics)
            accuracy = f"{metrics['accuracy']:.4f}" if metrics else "-"
            if metrics and title.startswith("validation"):
                accuracy += " (val)"
            self.stdout.write(
                f"{version.pk:>4}  {version.status:<9}  {version.architecture:<12}  {version.task:<6}  "
                f"{accuracy:>13}  {version.created_at:%Y-%m-%d %H:%M}  {version.cell_count:>7}"
            )
