"""Who may sign in, as the sign-in page checks it (settings.AUTHENTICATION_BACKENDS)."""

from django.contrib.auth.backends import AllowAllUsersModelBackend


class InactiveAccountToldBackend(AllowAllUsersModelBackend):
    """Django's ModelBackend, except that an inactive account given its right password is
    authenticated, only for the sign-in form to refuse it saying it is inactive
    (AuthenticationForm.confirm_login_allowed). Django's own backend refused it as it refuses a wrong
    password: the person was told the password did not match and tried again, each try counted
    toward the lockout. A wrong password still reads the same for every account, inactive or not.

    An inactive account is never signed in for all that: reading a session's account drops it, as
    ModelBackend does, so a sign-in made before the account was made inactive ends with it (Django's
    AllowAllUsersModelBackend would keep it)."""

    def get_user(self, user_id):
        return _active(super().get_user(user_id))

    async def aget_user(self, user_id):
        return _active(await super().aget_user(user_id))


def _active(user):
    return user if user is not None and user.is_active else None
