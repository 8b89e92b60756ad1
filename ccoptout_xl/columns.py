"""The columns of the opt-out table: one schema for every place that shows opt-outs as an Excel table.

The report's ``OptOuts`` table (:mod:`ccoptout_xl.report`), the workbook's ``OptOuts`` table and the rows Refresh
writes into it, the rows the worksheet functions spill (:mod:`ccoptout_xl.excel`) and the empty table of the
workbook build (``workbook/build.py``) all take their headers, order, widths and number formats from
:data:`COLUMNS`, so the report and the workbook show the same columns in the same order.

Each column says how its value is read from an :class:`~ccoptout_xl.optouts.OptOut` record: text, or the aware
opt-out instant. What a cell makes of it is the front end's part: the report writes text as text cells and the
instant in its time zone; Refresh neutralises text (:func:`~ccoptout_xl.formats.neutralise`) and writes the
instant as a serial number; worksheet functions return the values as they are. Text from the API is never a
formula in any of them.

Worksheet functions never call the network, so they leave out the columns whose value needs an API call (list
names, campaign names: :attr:`Column.not_in_functions` says so); they show the others, in the same order
(:data:`FUNCTION_COLUMNS`). The report shows the Campaign column only when asked for campaigns
(:func:`report_columns`); the workbook's table always has it (Refresh fills it when the sign-in allows).

A leaf module: it imports only the opt-out record and the standard library.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .optouts import OptOut

TABLE_NAME = "OptOuts"  # the Excel table, in the report and in the workbook
DATE_TIME_FORMAT = "yyyy-mm-dd hh:mm:ss"  # shows whole seconds; the cell holds the API's milliseconds
SOURCE_COMMENT = (
    "Contact: the person unsubscribed; the account cannot email them until they opt back in.\n"
    "Account: the account owner removed them; they can be added back to lists."
)

ListNames = Mapping[str, str]  # list id -> list name
Value = str | dt.datetime


@dataclass(frozen=True)
class Column:
    """One column of the opt-out table."""

    header: str
    width: float  # Excel's column width, in characters
    read: Callable[[OptOut, ListNames], Value]  # the cell's value: text, or the aware opt-out instant
    number_format: str | None = None  # None: General (text)
    comment: str = ""  # the header cell's comment in the report
    not_in_functions: str = ""  # why worksheet functions leave this column out; empty: they show it

    def value(self, optout: OptOut, list_names: ListNames | None = None) -> Value:
        return self.read(optout, list_names or {})


def _lists(optout: OptOut, list_names: ListNames) -> str:
    """The lists the contact is on, by name (by id where the name is unknown), in the API's order."""
    return ", ".join(list_names.get(list_id) or list_id for list_id in optout.list_ids)


CAMPAIGN = Column(
    "Campaign",
    32,
    lambda o, _: o.campaign_name or "",
    comment="The email whose unsubscribe link the person used; empty: none (the account removed them, a form, "
    "an import, or an older opt-out they reversed).",
    not_in_functions="campaign names need the campaign reports; =OPTOUTS_BY_CAMPAIGN counts by campaign",
)

# Who (email, name), then what happened (when, how, in their words), then the lists and the contact's key: the
# order of the report since its first version, and of the README; the workbook now has it too. The campaign (which
# email) follows the person's words.
COLUMNS: tuple[Column, ...] = (
    Column("Email", 36, lambda o, _: o.email),
    Column("First name", 16, lambda o, _: o.first_name),
    Column("Last name", 18, lambda o, _: o.last_name),
    Column("Opted out", 18, lambda o, _: o.opt_out_date, number_format=DATE_TIME_FORMAT),
    Column("Source", 10, lambda o, _: o.opt_out_source, comment=SOURCE_COMMENT),
    Column("Reason", 50, lambda o, _: o.opt_out_reason or ""),
    CAMPAIGN,
    Column("Lists", 30, _lists, not_in_functions="list names need an API call, which worksheet functions never make"),
    Column("Contact ID", 38, lambda o, _: o.contact_id),
)
FUNCTION_COLUMNS: tuple[Column, ...] = tuple(column for column in COLUMNS if not column.not_in_functions)


NO_CAMPAIGN = "(no campaign)"  # the row of the opt-outs through no email, wherever campaigns are counted


def campaign_label(campaign_id: str | None, name: str | None) -> str:
    """A campaign as a row of counts names it: its name, else its id (a name the API no longer gives), and
    :data:`NO_CAMPAIGN` for the row of the opt-outs through none."""
    if campaign_id is None:
        return NO_CAMPAIGN
    return name or f"(campaign {campaign_id})"


def report_columns(campaigns: bool) -> tuple[Column, ...]:
    """The report's columns: the table's, without Campaign unless the report was asked for campaigns."""
    return COLUMNS if campaigns else tuple(column for column in COLUMNS if column is not CAMPAIGN)


def headers(columns: Iterable[Column] = COLUMNS) -> list[str]:
    """The header row of ``columns`` (by default the table's)."""
    return [column.header for column in columns]
