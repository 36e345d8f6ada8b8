"""Two requests at once, in tests of what PostgreSQL's row locks order: each runs in a thread of its
own with its own database connection, closed when it is done (as a request's would be)."""

import threading

from django.db import connection, transaction

from tests.conftest import wait_for


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


def post_while_held(client, change, path, data, waits_on, **headers):
    """POST ``data`` to ``path`` while ``change()`` holds its transaction open on a connection of its
    own, letting it commit once the request waits on a lock (``waits_on`` names the row, for the
    failure message); the answer, followed."""
    holding, release, answers = threading.Event(), threading.Event(), []

    def change_and_hold():
        with transaction.atomic():
            change()
            holding.set()
            release.wait(30)

    changing = start_as_another_request(change_and_hold)
    assert holding.wait(30)
    asking = start_as_another_request(lambda: answers.append(client.post(path, data, follow=True, **headers)))
    wait_for(lambda: answers or waiting_on_a_lock(), f"the request to wait on {waits_on}", 30)
    release.set()
    changing.join(30)
    asking.join(30)
    assert answers, "the request failed (a 500)"
    return answers[0]
