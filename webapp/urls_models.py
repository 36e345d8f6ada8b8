"""Routes for model versions and retraining (staff only)."""

urlpatterns = []
