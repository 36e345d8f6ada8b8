from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from webapp.views import core

handler400 = "webapp.views.errors.bad_request"
handler403 = "webapp.views.errors.permission_denied"
handler404 = "webapp.views.errors.page_not_found"
handler500 = "webapp.views.errors.server_error"

urlpatterns = [
    path("", core.home, name="home"),
    path("healthz", core.healthz, name="healthz"),
    path("accounts/login/", core.SignInView.as_view(), name="login"),
    path("accounts/activity/", core.sign_in_activity, name="sign-in-activity"),
    path("accounts/logout/", core.SignOutView.as_view(), name="logout"),
    path(
        "accounts/password/",
        auth_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "accounts/password/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("media/<path:path>", core.protected_media, name="media"),
    path("admin/", admin.site.urls),
    path("models/", include("webapp.urls_models")),
    path("", include("webapp.urls_lab")),
]
