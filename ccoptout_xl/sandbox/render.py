"""Turn stored rows into the JSON shapes of the V3 contract.

Instants are stored as milliseconds relative to the account's anchor ("now"), so one cached
database serves any anchor. Each contact has a timestamp style: ``Z_STYLE`` renders
``2016-01-23T13:48:44.108Z`` and ``EASTERN_STYLE`` renders ``2016-03-03T10:56:29-05:00``
(whole seconds: the generator never gives those contacts sub-second instants).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

Z_STYLE = 0
EASTERN_STYLE = 1
_EASTERN_OFFSET_S = -5 * 3600

PERMISSIONS = ("explicit", "implicit", "not_set", "pending_confirmation", "temp_hold", "unsubscribed")
UNSUBSCRIBED = 5
DELETED_OFFSET = 10
"""``state`` column: the permission code, plus DELETED_OFFSET for deleted contacts."""

EMPTY_SUBRESOURCES = ("custom_fields", "phone_numbers", "street_addresses", "taggings", "notes")

CONTACT_COLUMNS = (
    "seq, contact_id, email, first_name, last_name, create_source, update_source, created, updated,"
    " email_updated, permission, opt_in_source, opt_in, confirm_status, opt_out, opt_out_source,"
    " opt_out_reason, deleted, style, lists"
)


def format_instant(epoch_ms: int, style: int = Z_STYLE) -> str:
    """Render an instant as the API does, in one of the two styles."""
    if style == Z_STYLE:
        seconds, millis = divmod(epoch_ms, 1000)
        t = time.gmtime(seconds)
        return (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{millis:03d}Z"
        )
    t = time.gmtime(epoch_ms // 1000 + _EASTERN_OFFSET_S)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}-05:00"


def format_date(epoch_ms: int) -> str:
    """Render the UTC date of an instant (contract format ``date``)."""
    t = time.gmtime(epoch_ms // 1000)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"


def contact_json(
    row: Sequence[Any], anchor_ms: int, list_ids: Sequence[str], include: Sequence[str] = ()
) -> dict[str, Any]:
    """Build a ``ContactResource`` from a row selected with CONTACT_COLUMNS."""
    (
        _seq,
        contact_id,
        email,
        first_name,
        last_name,
        create_source,
        update_source,
        created,
        updated,
        email_updated,
        permission,
        opt_in_source,
        opt_in,
        confirm_status,
        opt_out,
        opt_out_source,
        opt_out_reason,
        deleted,
        style,
        lists,
    ) = row
    address: dict[str, Any] = {
        "address": email,
        "permission_to_send": PERMISSIONS[permission],
        "created_at": format_instant(anchor_ms + created, style),
        "updated_at": format_instant(anchor_ms + email_updated, style),
    }
    if opt_in_source is not None:
        address["opt_in_source"] = opt_in_source
    if opt_in is not None:
        address["opt_in_date"] = format_instant(anchor_ms + opt_in, style)
    if opt_out is not None:
        address["opt_out_source"] = opt_out_source
        address["opt_out_date"] = format_instant(anchor_ms + opt_out, style)
        if opt_out_reason is not None:
            address["opt_out_reason"] = opt_out_reason
    address["confirm_status"] = confirm_status
    contact: dict[str, Any] = {"contact_id": contact_id, "email_address": address}
    if first_name is not None:
        contact["first_name"] = first_name
    if last_name is not None:
        contact["last_name"] = last_name
    contact["update_source"] = update_source
    contact["create_source"] = create_source
    contact["created_at"] = format_instant(anchor_ms + created, style)
    contact["updated_at"] = format_instant(anchor_ms + updated, style)
    if deleted is not None:
        contact["deleted_at"] = format_date(anchor_ms + deleted)
    for name in include:
        if name == "list_memberships":
            contact["list_memberships"] = [lid for bit, lid in enumerate(list_ids) if lists >> bit & 1]
        elif name in EMPTY_SUBRESOURCES:
            contact[name] = []
    return contact
