from django.core.management.base import BaseCommand
from django.utils import timezone

from webapp.presenters.models import headline, source_test_splits, without_copies
from webapp.selectors import model_versions_with_cell_counts


class Command(BaseCommand):
    help = "List model versions: status, architecture, task, held-out accuracy, cells classified."

    def handle(self, *args, **options):
        versions = model_versions_with_cell_counts().order_by("pk")
        if not versions:
            self.stdout.write(
                "No model versions yet: run `manage.py ensure_default_model` or `manage.py train`."
            )
            return
        header = (
            f"{'id':>4}  {'status':<9}  {'architecture':<12}  {'task':<6}  {'accuracy':>8}  "
            f"{'created':<16}  {'cells':>7}  measured on"
        )
        self.stdout.write(header)
        for version in versions:
            # The figure the model pages headline: the first source's TEST where there is one (a
            # version trained on several folders keeps each folder's apart), else validation; the
            # other folders' TEST after it, since a lab like the second source reads that one. A
            # TEST of photographs of cells also in TRAIN alone is named with why it has no figure. Each
            # figure is on the photographs never trained on, as the pages give it, and says so.
            shown = headline(version.metrics)
            accuracy = "-" if shown is None or shown["accuracy"] is None else f"{shown['accuracy']:.4f}"
            measured_on = [", ".join(filter(None, (shown["where"], shown["without"])))] if shown else []
            for test in source_test_splits(version):
                where = test.table["where"]
                if test.no_figure:
                    measured_on.append(test.no_figure)
                elif shown is None or where != shown["where"]:
                    figure = f"{where} {test.held_out['accuracy']:.4f}"
                    measured_on.append(", ".join(filter(None, (figure, without_copies(test.also_in_train)))))
            created = timezone.localtime(version.created_at)  # the site's time zone, as its pages
            self.stdout.write(
                f"{version.pk:>4}  {version.status:<9}  {version.architecture:<12}  {version.task:<6}  "
                f"{accuracy:>8}  {created:%Y-%m-%d %H:%M}  {version.cell_count:>7}  "
                f"{'; '.join(measured_on)}"
            )
