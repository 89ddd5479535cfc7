"""Campaign files for tests, built as data: the example campaign's values by default, small overrides.

``build_campaign(tmp_path, ...)`` writes ``campaign.toml`` (with tomli-w), the letter template and the
supporters CSV into a folder and returns the campaign file's path, ready for ``load_spec``. The data
mirrors the campaign file's schema (README, "Campaign file"): ``[campaign]`` (with ``schedule``),
``[sender]``, ``[letter]``, ``[[to]]``, ``[[cc]]``, ``[supporters]``.

By default it is config/campaigns/north-korean-refugees/ with one change: Xi Jinping's second fax
number, which the example publishes malformed ("+011 10 6238 1025"), is the corrected
"+86 10 6238 1025", so the default campaign validates. Tests of the malformed number pass it
explicitly, or use the example file itself. tests/test_builders.py checks the default against the
example's files.

    build_campaign(tmp_path)                                                   # the (fixed) example
    build_campaign(tmp_path, cc=[guo_shengkun(), wang_yi(email=["wang@example.gov.cn"])])
    build_campaign(tmp_path, to=[official("A. Minister", fax=["+86 10 6307 0900"])], supporters=[])
    build_campaign(tmp_path, schedule={"mode": "office-hours"}, route_policy="all-routes")
"""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import tomli_w

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "config" / "campaigns" / "north-korean-refugees"

# -- the example campaign's values (config/campaigns/north-korean-refugees/campaign.toml) -------------

NAME = "north-korean-refugees-2015"
TITLE = "Detention of nine North Korean refugees"

SENDER: dict[str, Any] = {
    "organisation": "Human Rights Watch",
    "signatory": "Sophie Richardson",
    "signatory_title": "China Director, Asia Division",
    "email": "china-advocacy@example.org",
    "reply_to": "china-advocacy@example.org",
    "fax_caller_id": "+1 212 555 0143",
    "address": ["350 Fifth Avenue, 34th Floor", "New York, NY 10118-3299", "USA"],
    "country": "US",
}

LETTER: dict[str, Any] = {"subject": "Detention of nine North Korean refugees", "template": "letter.txt.j2"}

XI_JINPING: dict[str, Any] = {
    "name": "Xi Jinping",
    "title": "President",
    "salutation": "Dear President Xi Jinping,",
    "organisation": "General Secretary Office, Central Committee of the Communist Party of China",
    "address": ["Zhongnanhai", "Ximen, Fuyou Street", "Xicheng District, Beijing 100017", "People's Republic of China"],
    "country": "CN",
    "timezone": "Asia/Shanghai",
    # the example publishes the second number as "+011 10 6238 1025" (malformed); corrected here
    "fax": ["+86 10 6307 0900", "+86 10 6238 1025"],
}

GUO_SHENGKUN: dict[str, Any] = {
    "name": "Guo Shengkun",
    "title": "Minister of Public Security",
    "organisation": "Ministry of Public Security",
    "address": ["No. 14, Donchanganjie", "Dongchengqu, Beijing, 100741", "People's Republic of China"],
    "country": "CN",
    "timezone": "Asia/Shanghai",
    "phone": ["+86 10 6626 2114"],
    "email": ["gabzfwz@mps.gov.cn"],
}

WANG_YI: dict[str, Any] = {
    "name": "Wang Yi",
    "title": "Foreign Minister",
    "organisation": "Ministry of Foreign Affairs",
    "address": ["No. 2, Chaoyangmen Nandajie", "Chaoyang District, Beijing, 100701", "People's Republic of China"],
    "country": "CN",
    "timezone": "Asia/Shanghai",
    "phone": ["+86 10 6596 1114"],
    "fax": ["+86 10 6559 1516"],
}

SUPPORTERS: tuple[tuple[str, str], ...] = (
    ("ada.supporter@example.org", "Ada Lovelace"),
    ("grace.supporter@example.net", "Grace Hopper"),
)

# -- addressees -------------------------------------------------------------------------------------


def official(name: str, *, country: str = "CN", timezone: str = "Asia/Shanghai", **fields: Any) -> dict[str, Any]:
    """An addressee (``[[to]]`` / ``[[cc]]`` entry) with only the fields given; ``fax``, ``email``,
    ``title``, ``salutation``, ... as in the campaign file."""
    return {"name": name, "country": country, "timezone": timezone, **fields}


def xi_jinping(**changes: Any) -> dict[str, Any]:
    """The example's To (with his second fax number corrected), with ``changes`` applied."""
    return {**copy.deepcopy(XI_JINPING), **changes}


def guo_shengkun(**changes: Any) -> dict[str, Any]:
    """The example's first CC (one email address), with ``changes`` applied."""
    return {**copy.deepcopy(GUO_SHENGKUN), **changes}


def wang_yi(**changes: Any) -> dict[str, Any]:
    """The example's second CC (one fax number), with ``changes`` applied."""
    return {**copy.deepcopy(WANG_YI), **changes}


# -- the campaign -----------------------------------------------------------------------------------


def campaign_data(
    *,
    name: str = NAME,
    title: str = TITLE,
    urgency: str = "urgent",
    route_policy: str = "first-success",
    route_order: str = "fax-first",
    deadline: datetime | None = None,
    schedule: Mapping[str, Any] | None = None,
    sender: Mapping[str, Any] | None = None,
    letter: Mapping[str, Any] | None = None,
    to: Sequence[Mapping[str, Any]] | None = None,
    cc: Sequence[Mapping[str, Any]] | None = None,
    supporters_file: str | None = "supporters.csv",
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The campaign file's content as a dict. ``sender`` and ``letter`` are merged over the example's;
    ``schedule`` replaces ``{"mode": "now"}``; ``to``/``cc``, when given, replace the example's
    addressees (``cc=[]``: no CC);
    ``extra`` adds keys to a table as they are (e.g. an unknown key, for shape errors)."""
    data: dict[str, Any] = {
        "campaign": {
            "name": name,
            "title": title,
            "urgency": urgency,
            "route_policy": route_policy,
            "route_order": route_order,
            **({"deadline": deadline} if deadline is not None else {}),
            "schedule": dict(schedule) if schedule is not None else {"mode": "now"},
        },
        "sender": {**copy.deepcopy(SENDER), **(sender or {})},
        "letter": {**LETTER, **(letter or {})},
        "to": [dict(a) for a in (to if to is not None else [xi_jinping()])],
        "cc": [dict(a) for a in (cc if cc is not None else [guo_shengkun(), wang_yi()])],
    }
    if supporters_file is not None:
        data["supporters"] = {"csv": supporters_file}
    for table, keys in (extra or {}).items():
        data.setdefault(table, {}).update(keys)
    return _without_none(data)


def supporters_csv(rows: Sequence[tuple[str, str | None] | tuple[str, str | None, str]]) -> str:
    """The supporters CSV: a header ``email,name,consent``, then one line per (email, name[, consent]) row;
    consent is "yes" unless a row gives it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "name", "consent"])
    writer.writerows((row[0], row[1] or "", row[2] if len(row) > 2 else "yes") for row in rows)
    return out.getvalue()


def build_campaign(
    folder: Path,
    *,
    supporters: Sequence[tuple[str, str | None] | tuple[str, str | None, str]] = SUPPORTERS,
    csv_text: str | None = None,
    template: str | None = None,
    **fields: Any,
) -> Path:
    """Write a campaign into ``folder`` and return its ``campaign.toml``.

    ``fields`` are :func:`campaign_data`'s keywords. ``supporters`` are (email, name[, consent]) rows
    written as the CSV (the example's two, with consent, by default); ``csv_text`` is written verbatim
    instead, for malformed
    CSVs. ``template`` is the letter template's source (the example's letter.txt.j2 by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = campaign_data(**fields)
    template_name = data["letter"].get("template")
    if template_name is not None:
        source = template if template is not None else (EXAMPLE_DIR / "letter.txt.j2").read_text(encoding="utf-8")
        (folder / template_name).write_text(source, encoding="utf-8")
    if "csv" in data.get("supporters", {}):
        text = csv_text if csv_text is not None else supporters_csv(supporters)
        (folder / data["supporters"]["csv"]).write_text(text, encoding="utf-8")
    path = folder / "campaign.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def _without_none(value: Any) -> Any:
    """TOML has no null: a key whose value is None is left out."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def api_headers(factory: Any, *roles: str, name: str | None = None) -> dict[str, str]:
    """The Authorization header of a new API token for a new user holding ``roles`` (viewer if none)."""
    from dispatcher.domain import accounts
    from dispatcher.domain.db import transaction
    from dispatcher.domain.models import utcnow

    roles = roles or ("viewer",)
    user = name or "tester-" + "-".join(roles)
    with transaction(factory) as session:
        accounts.add_user(session, user, roles=roles, password=None, now=utcnow(), replace=True)
        token = accounts.create_token(session, user, label="tests", now=utcnow())
    return {"Authorization": f"Bearer {token}"}
