"""Filter forms of the history pages: usage (and its CSV export) and the audit log.

Both are GET forms read from the query string (``formdata=request.args``), so
a filtered view is a link that can be shared or reloaded; they change nothing,
so they carry no CSRF token. Dates are UTC days; "to" includes its whole day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask_wtf import FlaskForm
from wtforms import DateField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional

from portal.core.errors import ValidationFailed
from portal.core.usage import services as usage
from portal.core.usage.models import UsageKind

MAX_RANGE_DAYS = usage.MAX_RANGE_DAYS
MAX_HOURLY_DAYS = usage.MAX_HOURLY_DAYS
AUTO_HOURLY_DAYS = 2  # the automatic bucket is an hour up to two days, then a day
EARLIEST_YEAR, LATEST_YEAR = 1970, 9000

PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
KIND_CHOICES = [
    SelectChoice("", "All kinds"),
    SelectChoice(UsageKind.TOKEN_ISSUED.value, "Token issued"),
    SelectChoice(UsageKind.TOKEN_FAILED.value, "Token request failed"),
    SelectChoice(UsageKind.TOKEN_INTROSPECTED.value, "Token introspected"),
    SelectChoice(UsageKind.TOKEN_REVOKED.value, "Token revoked"),
]
OUTCOME_CHOICES = [
    SelectChoice("", "Any outcome"),
    SelectChoice("ok", "Succeeded"),
    SelectChoice("failed", "Failed, or token inactive"),
]
PERIOD_CHOICES = [
    SelectChoice("24h", "Last 24 hours"),
    SelectChoice("7d", "Last 7 days"),
    SelectChoice("30d", "Last 30 days"),
]
BUCKET_CHOICES = [
    SelectChoice("", "Automatic"),
    SelectChoice("hour", "Hour"),
    SelectChoice("day", "Day"),
]


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class DateRangeForm(FlaskForm):
    """``start`` and ``end`` UTC days; checked to be in order and sensible."""

    class Meta:
        csrf = False  # a GET filter: it changes nothing

    start = DateField("From (UTC date)", validators=[Optional()])
    end = DateField("To (UTC date, included)", validators=[Optional()])

    def __init__(self, formdata: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(formdata=formdata, **kwargs)

    def validate(self, extra_validators: Any = None) -> bool:
        valid = super().validate(extra_validators)
        for field in (self.start, self.end):
            day = field.data
            if not field.errors and day is not None and not (
                    EARLIEST_YEAR <= day.year <= LATEST_YEAR):
                field.errors = [*field.errors,
                                f"Choose a date between {EARLIEST_YEAR} and {LATEST_YEAR}."]
                valid = False
        if valid and self.start.data and self.end.data and self.start.data > self.end.data:
            self.end.errors = [*self.end.errors, "The “to” date is before the “from” date."]
            valid = False
        return valid

    def dates(self) -> tuple[datetime | None, datetime | None]:
        """The valid form's range as ``start`` <= time < ``end``; None where not given."""
        start = _day_start(self.start.data) if self.start.data else None
        end = _day_start(self.end.data) + timedelta(days=1) if self.end.data else None
        return start, end

    def query_args(self) -> dict[str, str]:
        """The filters as query-string arguments (for pager and CSV links); empty ones left out."""
        return {name: str(value) for name, value in self._raw().items() if value}

    def _raw(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for name, field in self._fields.items():
            raw = field.raw_data[0] if field.raw_data else None
            args[name] = raw if raw is not None else (field.data or "")
        return args


@dataclass(frozen=True)
class Window:
    """The time window a usage query covers, and how the chart groups it."""

    start: datetime
    end: datetime
    bucket: str  # "hour" or "day"


class UsageFilterForm(DateRangeForm):
    """Usage history filters: client, kind, outcome, period or dates, chart bucket."""

    client = SelectField("Client", validate_choice=False)
    kind = SelectField("Kind", choices=KIND_CHOICES, default="")
    outcome = SelectField("Outcome", choices=OUTCOME_CHOICES, default="")
    period = SelectField("Period", choices=PERIOD_CHOICES, default="24h")
    bucket = SelectField("Chart by", choices=BUCKET_CHOICES, default="")

    def validate(self, extra_validators: Any = None) -> bool:
        valid = super().validate(extra_validators)
        known = {str(choice.value) for choice in self.client.choices or []}
        if self.client.data and self.client.data not in known:
            self.client.errors = [*self.client.errors,
                                  "No client of this organisation has that ID."]
            valid = False
        if not valid:
            return False
        window = self.window(datetime.now(UTC))
        try:
            usage.check_window(window.start, window.end, window.bucket)
        except ValidationFailed as e:
            field = self.bucket if e.field == "bucket" else self.end
            field.errors = [*field.errors, e.message]
            return False
        return True

    def window(self, now: datetime) -> Window:
        """The window of a valid form: the dates when given, else the period up to ``now``."""
        start, end = self.dates()
        if end is None:
            end = now
            if start is None:
                start = now - PERIODS.get(self.period.data or "", PERIODS["24h"])
        elif start is None:
            start = end - PERIODS["7d"]
        if start < now < end:
            end = now  # no empty future buckets
        span = end - start
        bucket = self.bucket.data or (
            "hour" if span <= timedelta(days=AUTO_HOURLY_DAYS) else "day")
        return Window(start=start, end=end, bucket=bucket)

    def kinds(self) -> tuple[UsageKind, ...] | None:
        return (UsageKind(self.kind.data),) if self.kind.data else None


class AuditFilterForm(DateRangeForm):
    """Audit log filters: actor (part of it), action (or a group), target id, dates."""

    actor = StringField("Actor", validators=[Length(max=200)])
    action = SelectField("Action", validate_choice=False, default="")
    target = StringField("Target ID", validators=[Length(max=200)])

    def set_actions(self, actions: list[str]) -> None:
        """Offer each action in use, grouped by its first part ("client:" = every client change)."""
        groups = sorted({a.split(":", 1)[0] + ":" for a in actions if ":" in a})
        choices = [SelectChoice("", "All actions")]
        choices += [SelectChoice(g, f"Every {g[:-1].replace('_', ' ')} action") for g in groups]
        choices += [SelectChoice(a, a) for a in actions]
        chosen = self.action.data or ""
        if chosen and chosen not in {c.value for c in choices}:
            choices.append(SelectChoice(chosen, chosen))
        self.action.choices = choices
