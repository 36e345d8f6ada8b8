import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "On a fresh install (no user at all), create an admin account and print its password once."

    def handle(self, *args, **options):
        users = get_user_model()
        if users.objects.exists():
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser("admin", email="", password=password)
        bar = "=" * 64
        self.stdout.write(
            f"{bar}\nFirst run: an administrator account was created.\n"
            f"  user name: admin\n  password:  {password}\n"
            f"It is shown only this once: sign in and change it (top right, or /accounts/password/).\n"
            f"{bar}"
        )
