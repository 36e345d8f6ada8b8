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


# What a person mistyped or an old link asked for: the access log has the line already, and an
# administrator has nothing to do about it. 403 stays a warning, and so does a 401 for a refused API
# key: someone trying what they may not, or a program with a wrong key, is for the administrator.
CLIENT_MISTAKES = (400, 404, 405, 410)


class ClientMistakesAsInfo(logging.Filter):
    """Django logs every 4xx answer as a warning; a 400 for a refused form, a 404 or a 405 is the
    site answering a person's mistake, not a problem: log it at INFO, so that the warnings an
    administrator reads are the ones to act on. A request Django refuses as suspicious keeps its
    warning (RefusalInOneLine words it), and so does a refused API key (unknown or revoked)."""

    def filter(self, record):
        status = getattr(record, "status_code", None)
        if record.msg == "Method Not Allowed (%s): %s":
            # Django's View logs this itself, then the handler logs the 405 again: one line is enough.
            return False
        if record.levelno != logging.WARNING:
            return True
        if status == 401:
            if _bearer(getattr(record, "request", None)):
                record.msg = f"{record.msg} - API key refused (unknown or revoked)"
                return True
            # A browser whose sign-in expired, asking the API from a page left open.
        elif status not in CLIENT_MISTAKES or (
                record.exc_info and isinstance(record.exc_info[1], SuspiciousOperation)):
            return True
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


def _bearer(request):
    header = getattr(request, "META", {}).get("HTTP_AUTHORIZATION", "") if request is not None else ""
    return header[:7].lower() == "bearer "
