"""Admin for the lab's records. What the network produced is shown read-only: a correction goes
through the review page, so it is recorded in CellReview like any other. Cells and reviews are the
audit trail of what the network said and what reviewers changed: they go only with the photograph
or sample they belong to, whose deletion goes through the services that remove the stored files.
Accounts (LabUserAdmin) are the admin role's to manage short of superuser status, staff status, the
admin role and single permissions, which only a superuser gives; API keys are revoked, never deleted."""

import copy
import re
import secrets
import unicodedata

from auditlog.admin import LogEntryAdmin
from auditlog.filters import CIDFilter, ResourceTypeFilter
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.models import LogEntry as AdminLogEntry
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import model_ngettext, unquote
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import ReadOnlyPasswordHashWidget, UserChangeForm
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.text import capfirst
from django.utils.translation import gettext

from webapp.counting import type_label
from webapp.forms import SampleAdminForm, is_row_id
from webapp.models import (
    ApiToken,
    Cell,
    CellReview,
    FingerprintBand,
    ModelActivation,
    ModelVersion,
    Sample,
    SmearImage,
)
from webapp.selectors import count_per_row, type_vocabulary, typed_accession
from webapp.services import api_tokens
from webapp.services.deletion import delete_image, delete_sample
from webapp.services.locking import DeletedMeanwhile, SampleLocked
from webapp.wording import count_of

# The lab's staff see the product's name, not the framework's, on the user and record pages.
admin.site.site_header = "Leukoscope administration"
admin.site.site_title = "Leukoscope admin"
admin.site.index_title = "Users, roles and lab records"


def delete_selected_through(actions, action):
    """The admin's ``actions`` with "Delete selected" (where offered) running ``action`` instead,
    under the same name and label: an action that judges the selection first, then deletes."""
    if "delete_selected" in actions:
        _, name, description = actions["delete_selected"]
        actions["delete_selected"] = (action, name, description)
    return actions


class ReadsOnlyWhatItCan:
    """For every admin list here: a filter value or a selection the database cannot read (a year
    past 9999, a row id of letters or beyond 64 bits, sent by an edited address or form) is the
    admin's "bad lookup" note or a message, not a server error, and changes nothing."""

    def get_changelist_instance(self, request):
        try:
            return super().get_changelist_instance(request)
        except (ValueError, OverflowError) as error:
            raise IncorrectLookupParameters(error) from error

    def response_action(self, request, queryset):
        chosen = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if not all(is_row_id(value) for value in chosen):
            self.message_user(request, "Those are not rows of this list: reload the page and choose again.",
                              messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        return super().response_action(request, queryset)


class SearchesAsTyped:
    """For the admin lists searched by accession number: the search box reads what it is given as
    the lab's pages read it (selectors.typed_accession), so a Japanese input method's full-width
    "Ｈ２６－０１" finds H26-01 here too. What it is given, composed, is searched as well: a file name
    is stored so (intake.uploaded_name), full-width "（１）" kept, which the folded term misses."""

    def get_search_results(self, request, queryset, search_term):
        folded = typed_accession(search_term)
        found, duplicates = super().get_search_results(request, queryset, folded)
        composed = unicodedata.normalize("NFC", search_term).strip()
        if composed == folded:
            return found, duplicates
        also, more_duplicates = super().get_search_results(request, queryset, composed)
        return found | also, duplicates or more_duplicates


class ViewOnly:
    """For the admin of a record only the site's own pages make and change: a cell comes from a
    classification and a review from the review buttons (which keep the sample's formula, flags and
    audit trail in step), and both go only with their photograph or sample."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class DeletesCellsWithIt:
    """For the admin of a record whose deletion takes its cells and their reviews along.

    Those cannot be deleted on their own (their admin refuses it), which Django's confirmation page
    would otherwise count as a missing permission and refuse the whole deletion.
    """

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed -= {Cell._meta.verbose_name, CellReview._meta.verbose_name}
        counts.pop(FingerprintBand._meta.verbose_name_plural, None)
        return _without_fingerprint_bands(deleted), counts, perms_needed, protected


class LeavesSignedOut:
    """For the admin of a record a signed sample locks: "Delete selected" leaves the locked ones out
    and says why. Django's confirmation page would otherwise refuse the whole deletion as a missing
    permission ("your account doesn't have permission"), to a superuser, about a locked result."""

    locked: Q  # the records has_delete_permission refuses, e.g. those of a signed sample
    locked_reason: str  # why, before the records' names

    def get_actions(self, request):
        return delete_selected_through(super().get_actions(request), type(self)._delete_unsigned)

    def _delete_unsigned(self, request, queryset):
        locked = queryset.filter(self.locked)
        if locked.exists():
            names = ", ".join(str(record) for record in locked[:10])
            self.message_user(request, self.locked_reason.format(names=names), messages.WARNING)
        unlocked = queryset.exclude(self.locked)
        return delete_selected(self, request, unlocked) if unlocked.exists() else None


class DeletesThroughService:
    """For the admin of a record a service deletes (``delete_one``: its files removed once
    committed and its deletion written to the trail, as the sample page's delete does): the service's
    refusals, a signed sample or a record another deletion took meanwhile, are the admin's messages
    rather than a server error, and Django's "deleted successfully" is not said for them, nor
    counts them, nor its history ("Recent actions") lists them as deleted."""

    def delete_one(self, record, user):
        raise NotImplementedError

    def log_deletions(self, request, queryset):
        """Django writes its history's rows before it deletes: each is written here once its record
        is deleted (_deleted_through_service)."""

    def _deleted_through_service(self, request, record):
        """Deletes ``record``, and lists the deletion in the admin's history; a refusal is the
        admin's message instead. True where it was deleted."""
        as_read = copy.copy(record)  # its id and name, which a deletion may clear
        try:
            self.delete_one(record, request.user)
        except (SampleLocked, DeletedMeanwhile) as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return False
        super().log_deletions(request, [as_read])
        return True

    def delete_model(self, request, obj):
        if not self._deleted_through_service(request, obj):
            request.deletion_refused = True

    def delete_queryset(self, request, queryset):
        deleted = sum(self._deleted_through_service(request, record) for record in queryset)
        # "Delete selected" (django.contrib.admin.actions) says its "Successfully deleted" next,
        # counted before the deletions: it is said with this count instead (message_user).
        request.deleted_through_service = deleted

    def message_user(self, request, message, level=messages.INFO, *args, **kwargs):
        deleted = getattr(request, "deleted_through_service", None)
        if deleted is not None and level == messages.SUCCESS:
            del request.deleted_through_service
            if not deleted:  # every one refused: the refusals alone are said
                return
            message = gettext("Successfully deleted %(count)d %(items)s.") % {
                "count": deleted, "items": model_ngettext(self.opts, deleted)}
        super().message_user(request, message, level, *args, **kwargs)

    def response_delete(self, request, obj_display, obj_id):
        if getattr(request, "deletion_refused", False):
            changelist = f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"
            return HttpResponseRedirect(reverse(changelist, current_app=self.admin_site.name))
        return super().response_delete(request, obj_display, obj_id)


def _without_fingerprint_bands(deleted):
    """Django's nested list of what a deletion takes, without the photographs' fingerprint bands:
    17 index rows a photograph (webapp.intake.fingerprint_bands), nothing a person deletes. An
    unregistered model's rows are listed as "<verbose name>: <row>" with no children."""
    band = f"{capfirst(FingerprintBand._meta.verbose_name)}: "
    return [_without_fingerprint_bands(entry) if isinstance(entry, list) else entry
            for entry in deleted if not (isinstance(entry, str) and entry.startswith(band))]


class SmearImageInline(admin.TabularInline):
    model = SmearImage
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("original_filename", "width", "height", "status", "model_version", "processed_at")
    readonly_fields = fields

    # Each row names its version: fetched with the rows, without the stored network (megabytes a
    # row; a single-cell sample of 1,000 photographs took 20 s and 2,005 queries before).
    def get_queryset(self, request):
        rows = super().get_queryset(request).select_related("sample", "model_version")
        return rows.defer("model_version__model_bytes")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Sample)
class SampleAdmin(SearchesAsTyped, ReadsOnlyWhatItCan, LeavesSignedOut, DeletesCellsWithIt,
                  DeletesThroughService, admin.ModelAdmin):
    # A result once signed stays on record (services.deletion.ensure_never_released), reopened too.
    locked = Q(times_signed__gt=0)
    locked_reason = ("Left out, as a result once signed stays on record: {names}. A reopened one is "
                     "corrected and signed again instead.")
    list_display = ("accession_number", "created_at", "created_by", "image_count", "status")
    search_fields = ("accession_number",)
    date_hierarchy = "created_at"
    show_full_result_count = False  # a lab's years of samples: see SmearImageAdmin
    # Signing and reopening go through the sample page (webapp.services.sign_off): their checks,
    # the lock and the audit trail's actor are there, not here.
    # What the photographs show (photographs) decided how the worker read them: changing it here
    # would not read them again.
    readonly_fields = ("photographs", "created_by", "created_at", "status", "target_count", "signed_by",
                       "signed_at", "below_target_reason", "unidentified_kept", "times_signed", "reopened_by",
                       "reopened_at", "reopen_reason", "photograph_list")
    inlines = [SmearImageInline]
    list_select_related = ("created_by",)
    form = SampleAdminForm
    # A sample of single-cell photographs may hold thousands: listed inline, 1,000 took 2.7 s to
    # draw. Past this many, a link to the photographs' own paginated list stands in for them.
    INLINE_PHOTOGRAPHS = 100

    # Every sample here comes from get_queryset, which counts its photographs (n_images).
    def get_inlines(self, request, obj):
        many = obj is not None and obj.n_images > self.INLINE_PHOTOGRAPHS
        return [] if many else super().get_inlines(request, obj)

    @admin.display(description="photograph list")
    def photograph_list(self, sample):
        count = sample.n_images
        if count <= self.INLINE_PHOTOGRAPHS:
            return "listed below"
        url = reverse("admin:webapp_smearimage_changelist") + f"?sample__id__exact={sample.pk}"
        return format_html('<a href="{}">{} photographs, in the photographs\' list</a>', url, f"{count:,}")

    # A sample comes from the upload form, which checks its photographs and its accession number.
    def has_add_permission(self, request):
        return False

    # A signed result is locked (webapp.services.locking) here too: reopened on its page first.
    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.is_signed:
            return ("accession_number", "note", *self.readonly_fields)
        return self.readonly_fields

    def get_queryset(self, request):
        # For the page's rows alone: grouped in the list's own query, every sample's photographs
        # were joined and counted before its 100 were taken.
        return super().get_queryset(request).annotate(n_images=count_per_row(SmearImage, "sample"))

    @admin.display(description="photographs", ordering="n_images")
    def image_count(self, sample):
        return sample.n_images

    # A result once signed stays on record (services.deletion.ensure_never_released).
    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and not (obj is not None and obj.times_signed)

    def delete_one(self, sample, user):
        delete_sample(sample, user=user)


@admin.register(SmearImage)
class SmearImageAdmin(SearchesAsTyped, ReadsOnlyWhatItCan, LeavesSignedOut, DeletesCellsWithIt,
                      DeletesThroughService, admin.ModelAdmin):
    locked = Q(sample__status=Sample.Status.SIGNED)
    locked_reason = ("Left out, as signed results are locked: {names}. Reopen the sample on its page "
                     "before deleting it.")
    list_display = ("id", "sample", "original_filename", "status", "model_version", "width", "height",
                    "processed_at")
    list_filter = ("status",)
    search_fields = ("sample__accession_number", "original_filename", "checksum")
    list_select_related = ("sample", "model_version")
    # The lists of the big tables (a busy lab's year: 2.5 million cells, over a million audit rows,
    # half a million reviews, the photographs): a filtered list counts what it shows, for its pages,
    # and not the whole table again for "N total" (a COUNT(*) of 2.5 million rows: 0.13 s on
    # PostgreSQL, against 0.4 ms for the page's rows). An unfiltered list's one count is its
    # paginator's, which says how many pages there are.
    show_full_result_count = False
    readonly_fields = ("sample", "image", "original_filename", "width", "height", "file_size", "checksum",
                       "conversion_note", "quality", "quality_warnings", "status", "error", "model_version",
                       "inference_runtime", "created_at", "processed_at")

    # Without the stored networks: megabytes a row, which the list only names.
    def get_queryset(self, request):
        return super().get_queryset(request).defer("model_version__model_bytes")

    def has_add_permission(self, request):
        return False

    # As for samples: the photograph, its cell crops, windows and heatmaps leave storage too.
    def delete_one(self, image, user):
        delete_image(image, user=user)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and not (obj is not None and obj.sample.is_signed)


class TypeFilter(admin.SimpleListFilter):
    """A list filter by cell type, offering every type the lab's rules and versions know. Django's
    own (AllValuesFieldListFilter) read the distinct values of the whole table on every page: a
    busy lab's year of 2.5 million cells, or half a million reviews."""

    title = "type"
    field: str

    def lookups(self, request, model_admin):
        return [(name, type_label(name)) for name in type_vocabulary()]

    def queryset(self, request, queryset):
        return queryset.filter(**{self.field: self.value()}) if self.value() else queryset


class CellTypeFilter(TypeFilter):
    parameter_name = field = "cell_type"


class ReviewedToTypeFilter(TypeFilter):
    title = "to type"
    parameter_name = field = "to_type"


@admin.register(Cell)
class CellAdmin(SearchesAsTyped, ViewOnly, ReadsOnlyWhatItCan, admin.ModelAdmin):
    list_display = ("id", "image", "index", "cell_type", "predicted_type", "confidence", "needs_review",
                    "corrected_type", "model_version", "created_at")
    list_filter = (CellTypeFilter, "needs_review")
    search_fields = ("image__sample__accession_number",)
    list_select_related = ("image__sample", "model_version")
    readonly_fields = [field.name for field in Cell._meta.fields]
    show_full_result_count = False  # a big table: see SmearImageAdmin

    def get_queryset(self, request):
        return super().get_queryset(request).defer("model_version__model_bytes")


@admin.register(CellReview)
class CellReviewAdmin(ViewOnly, ReadsOnlyWhatItCan, admin.ModelAdmin):
    list_display = ("id", "cell", "from_type", "to_type", "reviewed_by", "reviewed_at")
    list_filter = (ReviewedToTypeFilter,)
    list_select_related = ("reviewed_by", "cell")
    readonly_fields = ("cell", "from_type", "to_type", "reviewed_by", "reviewed_at")
    show_full_result_count = False  # a big table: see SmearImageAdmin


def _new_form_token():
    return secrets.token_urlsafe(24)


class ApiTokenForm(forms.ModelForm):
    # Rendered anew with each blank form and sent back with it: one key per form (api_tokens.create_token).
    form_token = forms.CharField(required=False, widget=forms.HiddenInput, initial=_new_form_token)

    class Meta:
        model = ApiToken
        fields = ("user", "name")

    def clean_user(self):
        user = self.cleaned_data["user"]
        if reason := api_tokens.refusal(user):
            raise forms.ValidationError(reason)
        return user

    def clean(self):
        # Said above the form: a hidden field's own error shows nowhere in the admin's page.
        if not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", self.cleaned_data.get("form_token") or ""):
            raise forms.ValidationError("This form is incomplete: open it again to make a key.")
        return super().clean()


class RevokeApiKeysForm(forms.Form):
    """Why the chosen keys are revoked: kept on each key and in its audit row, as the command's
    --reason is, so that whoever later finds a key revoked learns why without asking around."""

    # Long enough for a sentence and a ticket number; the list and the trail show it whole.
    reason = forms.CharField(
        max_length=500, label="Reason",
        help_text="Kept with each key and in the audit trail, e.g. \"sent by e-mail\" or \"LIS replaced\".",
        error_messages={"required": "Give a reason: it is kept with each key revoked and in the audit "
                                    "trail."},
        widget=forms.TextInput(attrs={"size": 60}))

    def clean_reason(self):
        # One line, as the command keeps it: the key's page and the trail's list show no line breaks.
        return " ".join(self.cleaned_data["reason"].split())


def _xor(data, pad):
    return bytes(d ^ p for d, p in zip(data, pad, strict=True))


@admin.register(ApiToken)
class ApiTokenAdmin(ReadsOnlyWhatItCan, admin.ModelAdmin):
    """Keys for programs (the lab's information system): made here or with `manage.py api_token
    create`, each shown once (here, on the page the form leads to) and never kept; listed and revoked
    here (a revoked key stays on record)."""

    list_display = ("id", "name", "user", "created_at", "last_used_at", "state", "revoked_by_shown")
    list_select_related = ("user", "revoked_by")
    actions = ("revoke",)

    @admin.display(description="state")
    def state(self, token):
        return api_tokens.token_state(token)

    @admin.display(description="revoked by")
    def revoked_by_shown(self, token):
        # No account revokes a key from a command, a shell, the reconciler's sweep or the key's own
        # use, and the reason says which: "unknown" would read as a revocation nobody can explain.
        # Unknown it is where no reason was kept either (revoked before migration 0031 without one).
        if token.revoked_at is None:
            return ""
        if token.revoked_by:
            return token.revoked_by.get_username()
        return "no account (see the reason)" if token.revoke_reason else "unknown"

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("user", "name", "created_at", "last_used_at", "revoked_at",
                                       "revoked_by_shown", "revoke_reason")

    def has_change_permission(self, request, obj=None):
        return False

    # A key is stopped by revoking it, and stays on record (who had it, when it was last used): the
    # admin offers no "Delete" button or "Delete selected" action, to superusers neither.
    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        # The one way a key is made (services.api_tokens): the form's object takes its record. A form
        # sent again leads to the key its first send made, which shows no key.
        try:
            token, request.api_key_made = api_tokens.create_token(
                obj.user, obj.name, form_token=form.cleaned_data["form_token"], how="Made in the admin.",
                by=request.user)
        except api_tokens.FormAlreadySent as sent:
            token, request.api_key_made = sent.token, None
        obj.pk, obj.key_sha256, obj.created_at = token.pk, token.key_sha256, token.created_at
        obj._state.adding = False

    # Post/redirect/get: the answer to the form's POST is a redirect to a page that shows the key,
    # once, so a reload of that page neither sends the form again (a second key) nor shows the key
    # again. Until shown, the key waits in the session that made it, sealed: the session (in the
    # database) holds it XORed with a one-time pad, the redirect's address holds the pad, and the page
    # unseals it, checks it against the key's digest and drops it from the session. So neither the
    # database nor a log of addresses holds, on its own, a key that would open the API (the pad is
    # logged by the request that drops the sealed key, and after it only as the Referer of that
    # page's own style sheets and scripts), and no other session (another administrator's, or the
    # same one's in another browser) sees it.
    @staticmethod
    def _sealed_name(token_id):
        return f"api_key_made:{token_id}"

    def response_add(self, request, obj, post_url_continue=None):
        made = reverse("admin:webapp_apitoken_made", args=[obj.pk], current_app=self.admin_site.name)
        if request.api_key_made is None:
            self.message_user(request, "This form had been sent already: its first send made this key, "
                              "and this one made none.", messages.WARNING)
            return HttpResponseRedirect(made)
        key = request.api_key_made.encode()
        pad = secrets.token_bytes(len(key))
        request.session[self._sealed_name(obj.pk)] = _xor(key, pad).hex()
        return HttpResponseRedirect(f"{made}?{urlencode({'pad': pad.hex()})}")

    def get_urls(self):
        made = path("<path:object_id>/made/", self.admin_site.admin_view(self.made_view),
                    name=f"{self.opts.app_label}_{self.opts.model_name}_made")
        return [made, *super().get_urls()]

    def made_view(self, request, object_id):
        """The key just made, shown once to the session that made it; any later visit says it was."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        token = self.get_object(request, unquote(object_id))
        if token is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        key = self._unseal(request, token)
        return TemplateResponse(request, "admin/webapp/apitoken/made.html", {
            **self.admin_site.each_context(request), "token": token, "key": key, "opts": self.opts,
            "title": "API key made" if key else "API key already shown",
        })

    def _unseal(self, request, token):
        """The key ``token`` was made with, taken out of this session, or None: already shown, made
        in another session, or an address whose pad is not the one it was sent with."""
        sealed = request.session.get(self._sealed_name(token.pk))
        try:
            sealed, pad = bytes.fromhex(sealed or ""), bytes.fromhex(request.GET.get("pad", ""))
        except ValueError:
            return None
        if not sealed or len(pad) != len(sealed):
            return None
        key = _xor(sealed, pad).decode("latin-1")
        if not api_tokens.is_key_of(token, key):
            return None
        del request.session[self._sealed_name(token.pk)]
        return key

    # Revoking is managing keys, as making them is: the admin role's right. Without a permission
    # named, Django offers an action to whoever may only view the list (an auditor).
    @admin.action(description="Revoke the selected API keys", permissions=["add"])
    def revoke(self, request, queryset):
        """Asks why on a page of its own (the admin's intermediate page for an action: the keys
        travel as its hidden fields), then revokes those still in force with that reason."""
        keys = list(queryset.select_related("user"))
        in_force = [token for token in keys if token.revoked_at is None]
        if not in_force:
            self.message_user(request, "The selected API keys are revoked already: nothing was changed.",
                              messages.WARNING)
            return None
        form = RevokeApiKeysForm(request.POST if "post" in request.POST else None)
        if not form.is_valid():
            return TemplateResponse(request, "admin/webapp/apitoken/revoke_confirmation.html", {
                **self.admin_site.each_context(request), "opts": self.opts, "form": form,
                "title": "Revoke API keys", "in_force": len(in_force),
                "keys": [(token, api_tokens.token_state(token)) for token in keys],
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            })
        revoked = api_tokens.revoke_tokens(queryset, f"Revoked in the admin: {form.cleaned_data['reason']}",
                                           by=request.user)
        for token in revoked:
            # The key's own history page names who revoked it, as it does for any change made here.
            self.log_change(request, token, "Revoked.")
        left = len(keys) - len(revoked)
        self.message_user(request, f"{count_of(len(revoked), 'API key')} revoked." + (
            f" {count_of(left, 'other was', 'others were')} revoked already and left as "
            f"{'it was' if left == 1 else 'they were'}." if left else ""))


# Accounts. The admin role manages them (auth.add_user, auth.change_user, with staff status for this
# admin), while a superuser passes every permission check, signing included. So for anyone who is not
# a superuser:
# - superuser status and the per-user permission list are shown, never changed: either grants any
#   permission at all, webapp.sign_sample among them;
# - a superuser's account is shown, never changed, deleted or given a new password;
# - staff status and the admin role (admin_roles below) are given and taken by a superuser alone, so
#   an account with staff status is a superuser's to change too, bar one's own. Why: they are what
#   manages accounts. An administrator who could hand them out could have the new administrator put
#   them in the hematologist group (the self-promotion refused below, in two steps), two could
#   promote each other, and one could take them from, or reset the password of, a fellow
#   administrator;
# - nobody changes their own groups or staff status.
# Giving other accounts the lab's roles (technologist, hematologist) stays the admin role's job. (Who
# sets an ordinary account's password can still sign in as it: that trust comes with the role.)
ADMIN_ROLE = "admin"  # the group migration 0009 makes


def admin_roles():
    """The groups only a superuser gives or takes: the admin role, and any group that holds a
    permission over accounts, groups or permissions (it would make its members administrators)."""
    over_accounts = Q(permissions__content_type__app_label="auth")
    return Group.objects.filter(Q(name=ADMIN_ROLE) | over_accounts).distinct()


class LabUserChangeForm(UserChangeForm):
    def clean_groups(self):
        """The groups chosen, and the account's memberships of the groups this form does not offer
        (admin_roles, to anyone but a superuser), which stay as they are."""
        offered = self.fields["groups"].queryset
        kept = self.instance.groups.exclude(pk__in=offered.values("pk")) if self.instance.pk else []
        return Group.objects.filter(pk__in=[group.pk for group in (*self.cleaned_data["groups"], *kept)])


class PasswordSummaryWidget(ReadOnlyPasswordHashWidget):
    """The password's summary (algorithm, masked salt and hash) without Django's "Reset password"
    button: shown on an account whose password only a superuser sets, where the button led to a 403."""

    def render(self, name, value, attrs=None, renderer=None):
        summary = self.get_context(name, value, attrs)["summary"]
        return format_html("<div><p>{}</p></div>", format_html_join(
            " ", "<strong>{}</strong>{}",
            ((entry["label"], format_html(": <bdi>{}</bdi>", entry["value"]) if entry.get("value") else "")
             for entry in summary)))


admin.site.unregister(User)


@admin.register(User)
class LabUserAdmin(ReadsOnlyWhatItCan, UserAdmin):
    form = LabUserChangeForm

    def _superusers_only(self, request, account):
        """Why only a superuser may change, delete or set the password of ``account``, or None."""
        if request.user.is_superuser or account is None:
            return None
        if account.is_superuser:
            return "it is a superuser's account"
        if account.pk == request.user.pk:
            return None
        if account.is_staff:
            return "it has staff status, which a superuser gives and manages"
        # Without staff status an administrator's account still manages accounts the day a
        # superuser ticks it: set its password, or make it a hematologist, and one could sign as it.
        if account.groups.filter(pk__in=admin_roles().values("pk")).exists():
            return "it holds the admin role, which a superuser gives and manages"
        return None

    def _on_record(self, request, account):
        """Which record names ``account``, in words, or None; read once a request, as the account
        page asks twice (its notice and its read-only fields) and each asking is four queries."""
        read = request.__dict__.setdefault("_accounts_on_record", {})
        if account.pk not in read:
            read[account.pk] = accounts_on_record([account.pk]).get(account.pk)
        return read[account.pk]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if "password" in form.base_fields and self._superusers_only(request, obj):
            # A fresh field: the declared one is shared by every form class made from UserChangeForm.
            password = copy.copy(form.base_fields["password"])
            password.widget = PasswordSummaryWidget()
            form.base_fields = {**form.base_fields, "password": password}
        return form

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and not self._superusers_only(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and not self._superusers_only(request, obj)

    def get_readonly_fields(self, request, obj=None):
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is not None and self._on_record(request, obj):
            # The records name an account by its user name, read when shown: renamed, every result
            # it signed, its FHIR performer and its trail entries would name someone else.
            fields += ("username",)
        if request.user.is_superuser:
            return fields
        fields += ("is_staff", "is_superuser", "user_permissions")
        if obj is not None and obj.pk == request.user.pk:
            fields += ("groups",)
        return fields

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or request.user.is_superuser or self._superusers_only(request, obj):
            return fieldsets
        note = ("Superuser status, staff status, single permissions and the admin role are given and "
                "taken by a superuser.")
        if obj.pk == request.user.pk:
            note += " So are your own groups."
        return [(name, {**options, "description": note} if "is_superuser" in options["fields"] else options)
                for name, options in fieldsets]

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "groups" and not request.user.is_superuser:
            kwargs["queryset"] = Group.objects.exclude(pk__in=admin_roles().values("pk"))
            kwargs["help_text"] = ("The lab's roles this account holds. The admin role is given and taken "
                                   "by a superuser.")
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "GET":
            account = self.get_object(request, unquote(object_id))
            why = self._superusers_only(request, account)
            if why and self.has_view_permission(request, account):
                self.message_user(request, f"Only a superuser may change, delete or set the password of "
                                  f"{account.get_username()}: {why}.", messages.INFO)
            elif account is not None and (named := self._on_record(request, account)):
                self.message_user(request, f"The user name {account.get_username()} stays as it is: the "
                                  f"account is {named}, and the lab's records name an account by its "
                                  "user name.", messages.INFO)
        return super().change_view(request, object_id, form_url, extra_context)

    def user_change_password(self, request, id, form_url=""):
        account = self.get_object(request, unquote(id))
        if why := self._superusers_only(request, account):
            raise PermissionDenied(f"Only a superuser may set the password of {account.get_username()}: "
                                   f"{why}.")
        return super().user_change_password(request, id, form_url)

    def delete_view(self, request, object_id, extra_context=None):
        account = self.get_object(request, unquote(object_id))
        if why := self._superusers_only(request, account):
            raise PermissionDenied(f"Only a superuser may delete {account.get_username()}: {why}.")
        return super().delete_view(request, object_id, extra_context)

    def construct_change_message(self, request, form, formsets, add=False):
        """Django's record of the change, its roles and sign-in said as given or taken: "Changed
        Groups." told no one reading the account's history whether the hematologist role was given
        or taken away."""
        message = super().construct_change_message(request, form, formsets, add)
        if add or not message or "changed" not in message[0]:
            return message
        said = {"groups": _groups_changed(form), "is_active": _active_changed(form)}
        labels = {str(form.fields[name].label): words for name, words in said.items()
                  if name in form.changed_data and words}
        fields = message[0]["changed"]["fields"]
        message[0]["changed"]["fields"] = [f"{field} ({labels[field]})" if field in labels else field
                                           for field in fields]
        return message

    def get_actions(self, request):
        return delete_selected_through(super().get_actions(request), type(self)._delete_within_reach)

    def _delete_within_reach(self, request, queryset):
        beyond = [account.get_username() for account in queryset if self._superusers_only(request, account)]
        if beyond:
            self.message_user(request, f"Only a superuser may delete {', '.join(beyond)}: superusers' "
                              "accounts and those with staff status are theirs to manage. Nothing was "
                              "deleted.", messages.ERROR)
            return None
        return delete_selected(self, request, queryset)

    def get_deleted_objects(self, objs, request):
        # An account's API keys would go with it (on_delete=CASCADE), but a key stays on record
        # (ApiTokenAdmin): the account is made inactive instead, which revokes its keys too.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        if ApiToken._meta.verbose_name in perms_needed:
            perms_needed.discard(ApiToken._meta.verbose_name)
            protected = [*protected, *(f"{capfirst(ApiToken._meta.verbose_name)}: {key}"
                                       for key in ApiToken.objects.filter(user__in=objs))]
            self.message_user(request, "API keys stay on record, so an account that has any is not "
                              "deleted: untick \"Active\" on it instead, which also revokes its keys.",
                              messages.WARNING)
        # The records name who uploaded, reviewed, signed or changed each sample (the audit trail),
        # who changed an account (the admin's own history of it, which Django deletes with its
        # author), who chose the network serving calls and who trained one (their pages would say
        # "system"). Deleting the account would leave them naming no one: it is made inactive.
        signed = Sample.objects.filter(Q(signed_by__in=objs) | Q(reopened_by__in=objs)).exists()
        if signed:
            # The samples it signed are listed as protected (Sample.signed_by), which is the reason;
            # Django also asked for the right to delete them, which no one has for a signed result,
            # and told a superuser "your account doesn't have permission to delete ... sample".
            perms_needed.discard(Sample._meta.verbose_name)
        on_record = accounts_on_record([account.pk for account in objs])
        protected = [*protected, *(f"Account {account.get_username()}: {on_record[account.pk]}"
                                   for account in objs if account.pk in on_record)]
        if signed or on_record:
            self.message_user(request, "An account the lab's records name (it signed or reopened a result, "
                              "uploaded, reviewed or changed something, changed an account, trained or "
                              "activated a network, revoked an API key) stays on record: untick "
                              "\"Active\" on it instead, which stops its sign-in.", messages.WARNING)
        return deleted, counts, perms_needed, protected


def _groups_changed(form):
    """The roles a saved account form gave and took, in words ("gave hematologist; took technologist")."""
    before = {group.name for group in form.initial.get("groups") or ()}
    after = {group.name for group in form.cleaned_data.get("groups") or ()}
    parts = [f"{verb} {', '.join(sorted(names))}" for verb, names in (("gave", after - before),
                                                                      ("took", before - after)) if names]
    return "; ".join(parts)


def _active_changed(form):
    return "may sign in again" if form.cleaned_data.get("is_active") else "may no longer sign in"


def accounts_on_record(account_ids):
    """{account id: which record names it, in words} of those of ``account_ids`` that a record names."""
    named_by = (
        ("named in the audit trail", LogEntry.objects.filter(actor__in=account_ids), "actor_id"),
        ("named in the history of accounts it changed",
         AdminLogEntry.objects.filter(user__in=account_ids), "user_id"),
        ("named as who activated a network",
         ModelActivation.objects.filter(activated_by__in=account_ids), "activated_by_id"),
        ("named as who trained a network", ModelVersion.objects.filter(created_by__in=account_ids),
         "created_by_id"),
        ("named as who cancelled a training",
         ModelVersion.objects.filter(cancelled_by__in=account_ids), "cancelled_by_id"),
        ("named as who revoked an API key", ApiToken.objects.filter(revoked_by__in=account_ids),
         "revoked_by_id"),
    )
    found = {}
    for words, rows, column in named_by:
        for account in rows.values_list(column, flat=True).distinct():
            found.setdefault(account, words)
    return found


class AuditedRecordTypeFilter(ResourceTypeFilter):
    """django-auditlog's record-type filter, its choices the models the trail records rather than
    those its rows name: finding those read every row (0.2 s over a busy lab's year of 1.2 million).
    API keys are among them though auditlog does not watch them: services.api_tokens writes their
    rows (made, revoked) by hand."""

    def lookups(self, request, model_admin):
        types = ContentType.objects.get_for_models(*auditlog.get_models(), ApiToken).values()
        return sorted(((kind.pk, kind.model) for kind in types), key=lambda choice: choice[1])


admin.site.unregister(LogEntry)


@admin.register(LogEntry)
class AuditTrailAdmin(LogEntryAdmin):
    """The audit trail's list, without what read every row of it each time it was opened (0.6 s a
    page over a busy lab's year, bench/scale.py): the record types found in it, a year-by-year
    drill-down (its years are read from every row; a date range filter stands in for it) and, on a
    filtered list, a second count of the whole trail. The paginator's own count stays (45 ms)."""

    date_hierarchy = None
    show_full_result_count = False  # a big table: see SmearImageAdmin
    list_filter = ["action", AuditedRecordTypeFilter, ("timestamp", admin.DateFieldListFilter), CIDFilter]

    @admin.display(description="User")
    def user_url(self, entry):
        # A row a command wrote names no account: who ran it, in words (audit.command_line_actor),
        # rather than auditlog's "system".
        said = entry.additional_data.get("who") if isinstance(entry.additional_data, dict) else None
        if entry.actor_id is None and said:
            return said
        return super().user_url(entry)
