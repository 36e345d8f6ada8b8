#!/usr/bin/env python
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    # TensorFlow's C++ start-up chatter (oneDNN, CPU features) means nothing to lab staff.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
