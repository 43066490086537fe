"""The ids a job carries: one grammar and one limit each, checked at intake (docs/webhooks.md, "Ids").

They name Redis keys, storage keys and every webhook, so each is bounded in length and limited
to characters that are safe in all three. The limits are generous for what Shopify and the
backend send: the guide's job ids are UUIDs (36 characters), shops are host names, product and
variant ids are 64-bit numbers (at most 20 digits) or their GIDs, handles are at most 255 characters.
"""

from __future__ import annotations

import re

from client_worker.config import HOST_NAME, HOST_NAME_MAX_CHARS
from client_worker.jobs.limits import shown

JOB_ID_MAX_CHARS = 128
SHOP_MAX_CHARS = HOST_NAME_MAX_CHARS
"""The myshopify domain or the shop's own: a host name."""
SHOPIFY_ID_MAX_DIGITS = 20
"""Shopify ids are 64-bit integers."""
SHOPIFY_GID_MAX_CHARS = 255
PRODUCT_HANDLE_MAX_CHARS = 255

_JOB_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{JOB_ID_MAX_CHARS - 1}}}")
_SHOPIFY_GID = re.compile(r"gid://shopify/[A-Za-z]+/(\d+)(?:\?[A-Za-z0-9=&_.-]*)?")
_HANDLE = re.compile(rf"[^\W_][\w.-]{{0,{PRODUCT_HANDLE_MAX_CHARS - 1}}}")


def job_id(value: str) -> str:
    """``value`` if it is a usable job id; raises ValueError naming the limit otherwise."""
    return _matching(_JOB_ID, value, f"must be 1 to {JOB_ID_MAX_CHARS} characters of letters, digits and . _ : - "
                                     "starting with a letter or digit (a UUID, for example)")


def shop(value: str) -> str:
    """``value`` if it is a host name such as ``shop-name.myshopify.com``; raises ValueError otherwise."""
    return _matching(HOST_NAME, value, "must be the shop's host name, e.g. shop-name.myshopify.com (at most "
                                       f"{SHOP_MAX_CHARS} characters of letters, digits, - and .)")


def shopify_number(value: str) -> str:
    """``gid://shopify/Product/123`` or ``123`` → ``"123"``; raises ValueError for anything else."""
    match = _SHOPIFY_GID.fullmatch(value) if len(value) <= SHOPIFY_GID_MAX_CHARS else None
    digits = value if value.isascii() and value.isdigit() else match.group(1) if match else None
    if digits is None:
        raise ValueError(
            f"must be a Shopify GID like gid://shopify/Product/123 (at most {SHOPIFY_GID_MAX_CHARS} characters) "
            f"or a numeric id; got {shown(value)}"
        )
    if len(digits) > SHOPIFY_ID_MAX_DIGITS:
        raise ValueError(f"is a number of {len(digits)} digits; Shopify ids have at most {SHOPIFY_ID_MAX_DIGITS}")
    return digits.lstrip("0") or "0"


def product_handle(value: str) -> str:
    """``value`` if it is a Shopify handle such as ``coffee-mug``; raises ValueError otherwise."""
    return _matching(_HANDLE, value, f"must be 1 to {PRODUCT_HANDLE_MAX_CHARS} letters, digits, - _ or . starting "
                                     "with a letter or digit (a Shopify handle such as coffee-mug)")


def _matching(rule: re.Pattern[str], value: str, says: str) -> str:
    if not rule.fullmatch(value):
        raise ValueError(f"{says}; got {shown(value)}")
    return value


def id_text(value: int) -> str:
    """A JSON number used as an id, as text; one too long to be any id is refused before Python's
    own limit on converting huge integers would raise."""
    if abs(value) >= 10**JOB_ID_MAX_CHARS:
        raise ValueError(f"is a number of more than {JOB_ID_MAX_CHARS} digits, too long for an id")
    return str(value)
