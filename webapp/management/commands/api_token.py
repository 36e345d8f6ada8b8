from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp import audit
from webapp.models import ApiToken
from webapp.services.api_tokens import ApiTokenError, create_token, revoke_token, token_state


class Command(BaseCommand):
    help = ("API keys for programs such as the lab's information system: "
            "create USER --name NAME (prints the key once), list, revoke ID [--reason WHY]. "
            "Nobody signs in on the command line: the audit trail names the operating-system user "
            "who ran create or revoke, as \"command line (OS user NAME)\", or \"(OS user root, through "
            "sudo by NAME)\" where root runs it through sudo, and a key revoked here names no account "
            "as who revoked it; its reason says the command and that user.")

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="make a key for an account and print it once")
        create.add_argument("username")
        create.add_argument("--name", required=True, help="what uses it, e.g. 'LIS'")
        actions.add_parser("list", help="every key: account, name, when made, last used, revoked")
        revoke = actions.add_parser("revoke", help="stop a key working at once")
        revoke.add_argument("id", type=int)
        revoke.add_argument("--reason", default="",
                            help="why, kept with the key and in the audit trail, e.g. 'sent by e-mail'")

    def handle(self, *args, action, **options):
        try:
            getattr(self, f"_{action}")(**options)
        except ApiTokenError as error:
            raise CommandError(str(error)) from None

    def _create(self, username, name, **_):
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"There is no account {username!r}: make one in the Django admin first "
                               "(without a role, it reads results and changes nothing).")
        token, key = create_token(user, name, how="Made with manage.py api_token create.",
                                  by_words=audit.command_line_actor())
        self.stdout.write(f"API key {token.pk} for {username} ({name}):\n  {key}\n"
                          "It is shown only this once. The program sends it as "
                          "'Authorization: Bearer <key>'.")

    def _list(self, **_):
        tokens = ApiToken.objects.select_related("user")
        if not tokens:
            self.stdout.write("No API key.")
        for token in tokens:
            used = _when(token.last_used_at) or "never"
            self.stdout.write(f"{token.pk}\t{token.user.get_username()}\t{token.name}\t"
                              f"made {_when(token.created_at)}\tlast used {used}\t{token_state(token)}")

    def _revoke(self, id, reason, **_):
        reason = " ".join(reason.split())
        because = (f"Revoked with manage.py api_token revoke by OS user {audit.os_user()}"
                   + (f": {reason}" if reason else "."))
        token = revoke_token(id, because, by_words=audit.command_line_actor())
        self.stdout.write(f"API key {token.pk} ({token.name}, {token.user.get_username()}) is revoked.")


def _when(moment):
    return moment.isoformat(timespec="seconds") if moment else ""
