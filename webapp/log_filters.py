"""Filters for the site's log."""

import logging

from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http.multipartparser import MultiPartParserError

# What Django answers 400 or 403 for: the request's fault, never the code's.
REFUSALS = PermissionDenied | SuspiciousOperation | BadRequest | MultiPartParserError


class RefusalInOneLine(logging.Filter):
    """A 403, a malformed request (an upload without its multipart boundary), or one Django refuses
    as suspicious (a forged Host header, a broken session), is the site turning away what it should
    not serve, not a fault in the code: log it as one line naming the user and the reason, without
    the traceback Django attaches. Other records keep theirs."""

    def filter(self, record):
        refused = record.exc_info and isinstance(record.exc_info[1], REFUSALS)
        if not refused:
            return True
        parts = [record.getMessage()]
        user = getattr(getattr(record, "request", None), "user", None)
        if user is not None and user.is_authenticated:
            parts.append(f"user {user.get_username()}")
        reason = str(record.exc_info[1] or "")
        if reason and reason not in parts[0]:
            parts.append(reason)
        record.msg, record.args = " - ".join(parts), ()
        record.exc_info = record.exc_text = None
        return True
