"""Filters for the site's log."""

import logging


class ForbiddenInOneLine(logging.Filter):
    """A 403 is the site refusing what a user may not do, not a fault in the code: log it as one line
    naming the user and the reason, without the traceback Django attaches. Records of any other
    status keep theirs."""

    def filter(self, record):
        if getattr(record, "status_code", None) != 403 or not record.exc_info:
            return True
        parts = [record.getMessage()]
        user = getattr(getattr(record, "request", None), "user", None)
        if user is not None and user.is_authenticated:
            parts.append(f"user {user.get_username()}")
        reason = str(record.exc_info[1] or "")
        if reason:
            parts.append(reason)
        record.msg, record.args = " - ".join(parts), ()
        record.exc_info = record.exc_text = None
        return True
