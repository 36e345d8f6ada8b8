#!/usr/bin/env python
import os
import sys

from classifier.runtimes import quiet_tensorflow_startup


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    quiet_tensorflow_startup(os.environ)
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except BrokenPipeError:
        # Its output piped to a reader that stopped early (`manage.py models | head`): nothing is
        # wrong. stdout then leads nowhere, so that the flush at exit does not fail again (Python's
        # signal documentation, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as error:
        # A bad setting or a database that cannot be reached is the operator's to fix: one line
        # naming the setting, not a traceback (LEUKOSCOPE_DEBUG=1 or --traceback shows it).
        from webapp.configuration import configuration_error_line, wants_traceback

        line = configuration_error_line(error)
        if line is None or wants_traceback(sys.argv):
            raise
        print(f"Error: {line}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
