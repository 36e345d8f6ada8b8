"""Routes of the lab workflow: samples, uploads, cells, history, export and the read-only API."""

urlpatterns = []
