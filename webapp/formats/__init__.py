"""Date and time formats (settings.FORMAT_MODULE_PATH): the Django admin and any date shown without
an explicit format read as the lab's pages do, 2026-12-05 08:35, not "Dec. 5, 2026, 8:35 a.m."."""
