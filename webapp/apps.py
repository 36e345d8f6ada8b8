from django.apps import AppConfig
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import m2m_changed, post_save

from webapp import (
    deploy_checks,  # noqa: F401  (registers the system checks)
    idle_sign_out,
)


class WebappConfig(AppConfig):
    name = "webapp"
    verbose_name = "Leukoscope"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here: the service imports our models, which the app registry must hold first.
        from webapp.services import api_tokens

        user_logged_in.connect(idle_sign_out.on_sign_in, dispatch_uid="webapp.idle_sign_out")
        # Signals, not the admin's forms: an account is also changed by commands and in a shell, and
        # every path must revoke the keys an account may no longer hold.
        account = get_user_model()
        post_save.connect(api_tokens.on_account_saved, sender=account, dispatch_uid="webapp.api_keys.saved")
        for given in (account.groups.through, account.user_permissions.through):
            m2m_changed.connect(api_tokens.on_account_given, sender=given,
                                dispatch_uid=f"webapp.api_keys.given.{given.__name__}")
