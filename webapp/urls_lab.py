"""Routes of the lab workflow: samples, uploads, cells, history, export and the read-only API."""

from django.urls import path

from webapp.views import added_cells, api, gallery, lab, report, sign_off

app_name = "lab"

urlpatterns = [
    path("samples/", lab.sample_list, name="sample-list"),
    path("samples/new/", lab.upload, name="upload"),
    path("samples/<int:pk>/", lab.sample_detail, name="sample-detail"),
    path("samples/<int:pk>/results/", lab.sample_results, name="sample-results"),
    path("samples/<int:pk>/status/", lab.sample_status, name="sample-status"),
    path("samples/<int:pk>/trail/", lab.sample_trail, name="sample-trail"),
    path("samples/<int:pk>/images/", lab.sample_add_images, name="sample-add-images"),
    path("samples/<int:pk>/photographs/", lab.sample_photographs, name="sample-photographs"),
    path("samples/<int:pk>/export.csv", lab.sample_export_csv, name="sample-export"),
    path("samples/<int:pk>/delete/", lab.sample_delete, name="sample-delete"),
    path("samples/<int:pk>/report/", report.report_page, name="sample-report"),
    path("samples/<int:pk>/report.pdf", report.report_pdf, name="sample-report-pdf"),
    path("samples/<int:pk>/gallery/", gallery.sample_gallery, name="sample-gallery"),
    path("samples/<int:pk>/gallery/review/", gallery.gallery_review, name="gallery-review"),
    path("samples/<int:pk>/sign/", sign_off.sample_sign, name="sample-sign"),
    path("samples/<int:pk>/reopen/", sign_off.sample_reopen, name="sample-reopen"),
    path("samples/<int:pk>/target/", sign_off.sample_target, name="sample-target"),
    path("images/<int:pk>/retry/", lab.image_retry, name="image-retry"),
    path("images/<int:pk>/delete/", lab.image_delete, name="image-delete"),
    path("images/<int:pk>/cells/add/", added_cells.add_cell, name="image-add-cell"),
    path("cells/<int:pk>/", lab.cell_detail, name="cell-detail"),
    path("cells/<int:pk>/count-in/", added_cells.cell_count_in, name="cell-count-in"),
    path("cells/<int:pk>/review/", lab.cell_review, name="cell-review"),
    path("history/", lab.history, name="history"),
    path("api/samples/", api.sample_list, name="api-samples"),
    path("api/samples/<int:pk>/", api.sample_detail, name="api-sample"),
    path("api/samples/<int:pk>/fhir", report.sample_fhir, name="api-sample-fhir"),
    path("api/samples/<int:pk>/export.csv", api.sample_csv, name="api-sample-export"),
    path("api/cells/", api.cell_list, name="api-cells"),
    path("api/cells/<int:pk>/", api.cell_detail, name="api-cell"),
]
