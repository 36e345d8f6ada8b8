from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError

from classifier.dataset import evaluation_folder, evaluation_images, left_out_note
from classifier.errors import TrainingDataError
from classifier.metrics import format_metrics
from classifier.training.data import data_folders
from webapp.management.commands._model_version_command import ModelVersionCommand
from webapp.services.model_registry import load_classifier
from webapp.services.training import replay_folders


class Command(ModelVersionCommand):
    help = "Evaluate a stored model version on a labelled split: metrics table and confusion matrix."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--split", default="TEST",
                            help="the split folder of each data folder to measure (default: TEST); a "
                                 "folder of class folders alone is measured whole")

    def handle(self, *args, version=None, data, split, **options):
        model_version = self.trained_version(version)
        folders = data or [str(folder) for folder in settings.TRAINING_DATA_DIRS]
        if not folders:
            raise CommandError("No data folder to evaluate on: give --data, or set LEUKOSCOPE_TRAINING_DATA.")
        # Every folder checked before the network loads: a slip is refused in one line, not after
        # TensorFlow's start-up lines, nor after the figures of the folders before it.
        notes = []
        for folder in folders:
            try:
                evaluation_images(folder, model_version.task, split)
            except TrainingDataError as exc:
                raise CommandError(str(exc)) from None
            measured = evaluation_folder(folder, split)[1]
            if note := left_out_note(measured, model_version.task, "this evaluation"):
                notes.append(f"Note: {note}")
        from classifier.training import evaluate_classifier  # TensorFlow: only when a command evaluates

        trained_on = self.trained_on(model_version)
        classifier = load_classifier(model_version)
        for number, folder in enumerate(folders):
            try:
                metrics = evaluate_classifier(classifier, folder, split=split, trained_on=trained_on)
            except TrainingDataError as exc:
                raise CommandError(str(exc)) from None
            if number:
                self.stdout.write("")
            self.stdout.write(format_metrics(metrics, title=self._title(model_version, folder, split)))
            self._details(metrics)
        for note in notes:  # after the figures, where a lab reads on from them
            self.stdout.write(note)

    def trained_on(self, model_version):
        """The TRAIN files the version learnt from (evaluation.trained_on_files), whose byte-for-byte
        copies among the photographs measured are measured apart, as its run measured its TEST."""
        from classifier.training.evaluation import trained_on_files

        present, missing = replay_folders(model_version)
        for folder in missing:
            self.stdout.write(f"Note: v{model_version.pk} learnt from {folder}, which is not on this "
                              "machine: copies of its photographs are not told apart from the others.")
        return trained_on_files(present, model_version.task,
                                (model_version.hyperparameters or {}).get("max_images_per_class"),
                                model_version.seed)

    @staticmethod
    def _title(model_version, folder, split):
        label = f"v{model_version.pk} ({model_version.architecture}/{model_version.task}) on {folder}"
        if Path(folder, split).is_dir():
            return f"{label} {split}"
        # A folder of class folders alone: every image it holds, which may be what the version learnt.
        trained_on = {Path(path).resolve() for path in data_folders(model_version.dataset_path)}
        caution = (f"; v{model_version.pk} trained on this folder, so these figures are not held out"
                   if Path(folder).resolve() in trained_on else "")
        return f"{label}, all its images (it has no {split} folder){caution}"

    def _details(self, metrics):
        if "binary" in metrics:
            self.stdout.write("")
            title = "binary grouping, summed from the types"
            self.stdout.write(format_metrics(metrics["binary"], title=title))
        without = metrics.get("without_same_cell_in_train")
        if without and not without["n"]:
            self.stdout.write(f"\nwithout images of cells also in TRAIN: none (all {metrics['n']} are)")
        elif without:
            self.stdout.write(f"\nwithout images of cells also in TRAIN: n={without['n']}  "
                              f"accuracy={without['accuracy']:.4f}")
