"""Which role may change a sample: the lab's work (uploading photographs, reviewing cells) is the
technologist's and the hematologist's, by the permissions their groups hold (migration 0009). A
signed-in account without a role may read results, as the laboratory information system does,
but changes nothing."""

import functools

from django.core.exceptions import PermissionDenied

from webapp.permissions import ADD_PHOTOGRAPHS, REVIEW, UPLOAD  # noqa: F401  (the views read them here)


def lab_work(permission, action):
    """A view decorator: ``action`` ("Uploading photographs") refused, with a sentence saying why,
    to an account whose role lacks ``permission``."""

    def decorator(view):
        @functools.wraps(view)
        def checked(request, *args, **kwargs):
            if not request.user.has_perm(permission):
                raise PermissionDenied(
                    f"{action} is for technologists and hematologists: your account has neither "
                    "role. An administrator gives it one (Django admin, Users, Groups).")
            return view(request, *args, **kwargs)

        return checked

    return decorator
