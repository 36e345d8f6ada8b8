"""Routes for model versions and retraining (staff only)."""

from django.urls import path

from webapp.views import models as views

app_name = "models"

urlpatterns = [
    path("", views.version_list, name="list"),
    path("train/", views.train, name="train"),
    path("adapt/", views.adapt, name="adapt"),
    path("reclassify/", views.reclassify_samples, name="reclassify"),
    path("<int:pk>/", views.version_detail, name="detail"),
    path("<int:pk>/progress.json", views.version_progress, name="progress"),
    path("<int:pk>/cancel/", views.cancel, name="cancel"),
    path("<int:pk>/activate/", views.activate, name="activate"),
    path("<int:pk>/delete/", views.delete, name="delete"),
]
