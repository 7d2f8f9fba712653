"""Django admin: every model, with state changed only through `runs.services`.

State fields are read-only everywhere; runs move by admin actions (start, complete, fail) and
approvals by grant/deny actions, each calling the service, so the admin emits exactly the
events the API would. A new run is created with `services.create_run` (stage names one per
line), PHI-checked like the API. Memberships edited inline go through `services.set_member`
/ `remove_member`, which keep at least one owner. The event log is read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Model, QuerySet
from django.forms import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from events.models import Event
from events.schemas import ErrorCode, EventRejected

from . import services
from .models import Approval, Artifact, Membership, Project, Role, Run, Stage
from .validators import has_breaking_characters, phi_safe, phi_safe_together, single_line

MAX_STAGES = 100
_NO_SAVE_BUTTONS = {
    "show_save": False,
    "show_save_and_continue": False,
    "show_save_and_add_another": False,
}


class _Refused(Exception):
    """A service refused the admin's change after the form validated (rare: a backstop)."""


def _field_names(model: type[Model]) -> list[str]:
    return [field.name for field in model._meta.fields]


def _report(
    request: HttpRequest,
    modeladmin: admin.ModelAdmin[Any],
    objects: QuerySet[Any],
    verb: str,
    change: Callable[[Any], object],
) -> None:
    """Apply `change` to each object; one message per object, success or the reason it failed."""
    for obj in objects:
        try:
            change(obj)
        except (services.TransitionError, services.ServiceBusy, EventRejected, ValueError) as exc:
            # TransitionError and EventRejected messages name states and fields, never values.
            modeladmin.message_user(request, f"{obj.pk}: cannot {verb}: {exc}", messages.ERROR)
        except ObjectDoesNotExist:
            modeladmin.message_user(request, f"{obj.pk}: no longer exists", messages.ERROR)
        else:
            modeladmin.message_user(request, f"{obj.pk}: {verb} done", messages.SUCCESS)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [str(name) for name in self.fields or ()]


# --- projects ------------------------------------------------------------------------------


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ("name",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Stored and shown on the dashboard and in the API: checked like every label.
        self.fields["name"].validators += [single_line, phi_safe("project name")]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    fields = ("user", "role")


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    form = ProjectForm
    list_display = ("name", "id", "created_at")
    search_fields = ("name", "id")
    readonly_fields = ("id", "created_at")
    inlines = (MembershipInline,)

    def save_formset(
        self,
        request: HttpRequest,
        form: forms.ModelForm[Any],
        formset: BaseInlineFormSet[Any, Any, Any],
        change: bool,
    ) -> None:
        if formset.model is not Membership:
            super().save_formset(request, form, formset, change)
            return
        project = form.instance
        formset.save(commit=False)
        changed = [
            f
            for f in formset.forms
            if f.has_changed() and f.instance.user_id and f not in formset.deleted_forms
        ]
        # New owners first, removals last: handing ownership over in one save must not trip
        # the "at least one owner" rule half-way.
        changed.sort(key=lambda f: f.instance.role != Role.OWNER)
        for member_form in changed:
            membership = member_form.instance
            try:
                if membership.pk and "user" in member_form.changed_data:
                    previous = Membership.objects.get(pk=membership.pk).user
                    services.remove_member(project, previous)
                services.set_member(project, membership.user, membership.role)
            except services.TransitionError as exc:
                self.message_user(request, f"{membership.user}: {exc}", messages.ERROR)
        for membership in formset.deleted_objects:
            try:
                services.remove_member(project, membership.user)
            except services.TransitionError as exc:
                self.message_user(request, f"{membership.user}: {exc}", messages.ERROR)
            except Membership.DoesNotExist:
                pass

    def save_related(
        self, request: HttpRequest, form: forms.ModelForm[Any], formsets: Any, change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        project = form.instance
        if not Membership.objects.filter(project=project, role=Role.OWNER).exists():
            services.set_member(project, request.user, Role.OWNER)
            self.message_user(
                request, "A project needs an owner: you were made its owner.", messages.INFO
            )


# --- runs ----------------------------------------------------------------------------------


class StageInline(ReadOnlyInline):
    model = Stage
    fields = (
        "position",
        "name",
        "status",
        "progress",
        "items_processed",
        "items_total",
        "status_message",
        "started_at",
        "finished_at",
        "error_code",
    )


class ArtifactInline(ReadOnlyInline):
    model = Artifact
    fields = ("name", "kind", "stage", "size_bytes", "content_type", "checksum", "created_at")


class ApprovalInline(ReadOnlyInline):
    model = Approval
    fields = (
        "governance_type",
        "priority",
        "status",
        "assignees",
        "decided_by",
        "reason_code",
        "requested_at",
        "decided_at",
    )

    @admin.display(description="assigned to")
    def assignees(self, obj: Approval) -> str:
        return ", ".join(obj.assignee_usernames())


class RunAddForm(forms.ModelForm):
    stage_names = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text=f"One stage name per line, in order (1 to {MAX_STAGES}).",
    )

    class Meta:
        model = Run
        fields = ("project", "name", "estimated_duration")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].validators += [single_line, phi_safe("name")]

    def clean_stage_names(self) -> list[str]:
        raw = self.cleaned_data["stage_names"]
        names = [line.strip() for line in raw.splitlines() if line.strip()]
        if not names:
            raise forms.ValidationError("Give at least one stage name.")
        if len(names) > MAX_STAGES:
            raise forms.ValidationError(f"At most {MAX_STAGES} stages.")
        max_length = Stage._meta.get_field("name").max_length or 120
        check_phi = phi_safe("stage name")
        errors: list[str] = []
        for number, name in enumerate(names, start=1):
            if len(name) > max_length:
                errors.append(f"line {number}: longer than {max_length} characters")
            elif has_breaking_characters(name):
                errors.append(f"line {number}: contains control characters")
            else:
                try:
                    check_phi(name)
                except forms.ValidationError as exc:
                    errors.extend(f"line {number}: {message}" for message in exc.messages)
        if errors:
            raise forms.ValidationError(errors)
        return names

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "name" in cleaned and "stage_names" in cleaned:  # both passed on their own
            phi_safe_together({"name": cleaned["name"], "stage_names": cleaned["stage_names"]})
        return cleaned


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "project", "status", "created_by", "created_at", "finished_at")
    list_filter = ("status", "project")
    search_fields = ("name", "id")
    list_select_related = ("project", "created_by")
    actions = ("start_runs", "complete_runs", "fail_runs")

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = RunAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [(None, {"fields": ("project", "name", "stage_names", "estimated_duration")})]
        return [(None, {"fields": _field_names(Run)})]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # A saved run changes only through the actions below (and so through the services).
        return _field_names(Run) if obj is not None else []

    def get_inlines(
        self, request: HttpRequest, obj: Any
    ) -> list[type[admin.options.InlineModelAdmin[Any, Any]]]:
        return [StageInline, ArtifactInline, ApprovalInline] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Run, form: Any, change: bool) -> None:
        if change:
            return  # nothing on a saved run is editable here
        data = form.cleaned_data
        try:
            run = services.create_run(
                data["project"],
                data["name"],
                data["stage_names"],
                created_by=request.user,
                estimated_duration=data.get("estimated_duration"),
            )
        except (EventRejected, ValueError) as exc:
            raise _Refused(str(exc)) from None
        # The admin goes on to log and redirect to `obj`: make it the run just created.
        obj.pk = run.pk
        obj.created_by = run.created_by
        obj.created_at = run.created_at
        obj._state.adding = False

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if object_id is not None:
            extra_context = {**(extra_context or {}), **_NO_SAVE_BUTTONS}
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except _Refused as exc:
            # The atomic block of changeform_view has rolled back: nothing was saved.
            self.message_user(request, f"Run not created: {exc}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    @admin.action(description="Start selected runs")
    def start_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        _report(request, self, queryset, "start", lambda run: services.start_run(run.pk))

    @admin.action(description="Complete selected runs")
    def complete_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        _report(request, self, queryset, "complete", lambda run: services.complete_run(run.pk))

    @admin.action(description="Fail selected runs (INTERNAL_ERROR)")
    def fail_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        _report(
            request,
            self,
            queryset,
            "fail",
            lambda run: services.fail_run(run.pk, ErrorCode.INTERNAL_ERROR.value),
        )


class _ViewMostlyAdmin(admin.ModelAdmin):
    """Rows created by the services only; every field read-only; no add, no delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*_field_names(self.model), *(str(f) for f in self.readonly_fields)]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), **_NO_SAVE_BUTTONS}
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        return  # state changes only through runs.services


@admin.register(Stage)
class StageAdmin(_ViewMostlyAdmin):
    list_display = ("name", "id", "run", "position", "status", "progress")
    list_filter = ("status",)
    search_fields = ("name", "id", "run__id")
    list_select_related = ("run",)


@admin.register(Artifact)
class ArtifactAdmin(_ViewMostlyAdmin):
    list_display = ("name", "id", "run", "kind", "size_bytes", "content_type", "created_at")
    list_filter = ("kind",)
    search_fields = ("name", "id", "run__id")
    list_select_related = ("run",)


@admin.register(Approval)
class ApprovalAdmin(_ViewMostlyAdmin):
    list_display = ("id", "run", "governance_type", "priority", "status", "requested_at")
    list_filter = ("status", "governance_type", "priority")
    search_fields = ("id", "run__id")
    list_select_related = ("run",)
    readonly_fields = ("assignees",)
    exclude = ("assigned_to",)
    actions = ("grant_approvals", "deny_approvals")

    @admin.display(description="assigned to")
    def assignees(self, obj: Approval) -> str:
        return ", ".join(obj.assignee_usernames())

    @admin.action(description="Grant selected approvals")
    def grant_approvals(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        _report(
            request,
            self,
            queryset,
            "grant",
            lambda a: services.decide_approval(a.pk, granted=True, decided_by=request.user),
        )

    @admin.action(description="Deny selected approvals")
    def deny_approvals(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        _report(
            request,
            self,
            queryset,
            "deny",
            lambda a: services.decide_approval(a.pk, granted=False, decided_by=request.user),
        )


# --- the event log -------------------------------------------------------------------------


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    """The log is history: it is read, never written, here."""

    list_display = ("id", "type", "project_id", "run_id", "created_at")
    list_filter = ("type",)
    search_fields = ("run_id", "project_id")
    readonly_fields = ("id", "type", "project_id", "run_id", "payload", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
