#!/usr/bin/env python
import os
import sys

from classifier.runtimes import quiet_tensorflow_startup


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    quiet_tensorflow_startup(os.environ)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
