"""The opt-out record, read from a V3 contact, and a collection of them that dedupes and sorts.

A contact carries opt-out data in ``email_address`` (``opt_out_source``, ``opt_out_date``, ``opt_out_reason``)
only while it is opted out; a contact who opted back in loses them. Deleted contacts may keep them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dateutil import parser as date_parser


@dataclass(frozen=True)
class OptOut:
    """One person who opted out of the account's email, as of the time it was fetched."""

    contact_id: str
    email: str
    first_name: str
    last_name: str
    opt_out_date: dt.datetime  # aware, as the API gave it
    opt_out_source: str  # "Contact": the person unsubscribed; "Account": the account removed them
    opt_out_reason: str | None  # the person's own words; None when they gave none
    list_ids: tuple[str, ...] = ()
    deleted: bool = False
    created_at: dt.datetime | None = None  # when the contact was created (the store's second dimension)
    campaign_id: str | None = None  # the campaign it came through, when asked for (:mod:`.campaigns`); else None
    campaign_name: str | None = None

    @classmethod
    def from_contact(cls, contact: Mapping[str, Any]) -> OptOut | None:
        """The opt-out a contact carries, or None if it carries none (active, re-subscribed, malformed)."""
        email = contact.get("email_address") or {}
        raw_date = email.get("opt_out_date")
        contact_id = contact.get("contact_id")
        if not raw_date or not contact_id:
            return None
        deleted = bool(contact.get("deleted_at"))
        permission = email.get("permission_to_send")
        if not deleted and permission not in (None, "unsubscribed"):
            return None  # stale opt-out fields on a contact who can be emailed again
        opt_out_date = parse_api_datetime(raw_date)
        if opt_out_date is None:
            return None
        reason = email.get("opt_out_reason")
        return cls(
            contact_id=str(contact_id),
            email=str(email.get("address") or ""),
            first_name=str(contact.get("first_name") or ""),
            last_name=str(contact.get("last_name") or ""),
            opt_out_date=opt_out_date,
            opt_out_source=str(email.get("opt_out_source") or ""),
            opt_out_reason=None if reason is None else str(reason),
            list_ids=tuple(str(i) for i in contact.get("list_memberships") or ()),
            deleted=deleted,
            created_at=parse_api_datetime(contact.get("created_at")),
        )


def parse_api_datetime(value: Any) -> dt.datetime | None:
    """An aware datetime from the API's ISO-8601 text (``...108Z`` or ``...-05:00``); None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = date_parser.isoparse(value)
    except (ValueError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
