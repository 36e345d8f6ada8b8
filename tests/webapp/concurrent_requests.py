"""Two requests at once, in tests of what PostgreSQL's row locks order: each runs in a thread of its
own with its own database connection, closed when it is done (as a request's would be)."""

import threading

from django.db import connection


def start_as_another_request(work):
    """Run ``work()`` in a thread of its own; returns the started thread."""

    def run():
        try:
            work()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def waiting_on_a_lock():
    """How many of the test database's sessions wait on a lock another holds (PostgreSQL): what a
    test waits for before it lets the holder go on."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0]
