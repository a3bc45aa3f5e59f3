"""Schemathesis hooks for scripts/fuzz-api.sh.

One hook, `filter_failure`, drops the failures that were analysed and found
to be schemathesis false positives (docs/reliability.md, "API fuzzing"). Each
rule is narrow: it names the check, the status, the problem `code` and the
exact `detail` the server gives for that reason, so any other failure of the
same check still fails the run. When FUZZ_DROPPED_LOG names a file, every
dropped failure is appended to it as "<operation>\t<reason>" so the script
can count them.

All of them are "schema-valid request rejected" (ST202,
positive_data_acceptance): a request that JSON Schema allows but that breaks
a rule JSON Schema cannot state.
"""

from __future__ import annotations

import json
import os
import re

import schemathesis

# `{"count": 11039.0}`: JSON Schema calls 11039.0 an integer, serde (and the
# contract: "money and points are integers") reads it as a float.
# The detail's number is serde's reading, not always the digits sent
# (2251799813685247.0 reads as ...247.2), so the sent value is looked up.
INTEGRAL_FLOAT = re.compile(r": invalid type: floating point `[^`]+`, expected i64$")
PATH_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")

# Rules between two fields, or between the request and stored data.
CROSS_FIELD = {
    "finishedAt: must be after startedAt": "finishedAt not after startedAt",
    "issueEndsAt: must be after issueStartsAt": "issueEndsAt not after issueStartsAt",
    "discountValue: a percentage must be 1 to 100": "PERCENT with discountValue over 100",
    "items: the order total is too large": "price x quantity over i64 (stored prices)",
}
DUPLICATE_PRODUCT = re.compile(r"^items: product -?\d+ appears more than once$")

# `{"issueEndsAt": ""}`: JSON Schema 2020-12 makes `format` an annotation, so
# schemathesis may send any string as a `date-time`; the server asserts it.
DATE_TIME_FIELDS = {"issueStartsAt", "issueEndsAt", "startedAt", "finishedAt"}
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def _problem(response) -> dict:
    try:
        body = json.loads(response.content)
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _sent(body, path: str):
    """The value at a problem's `field` path (`items[0].quantity`) in the request body."""
    value = body
    for name, index in PATH_STEP.findall(path or ""):
        try:
            value = value[int(index)] if index else value[name]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _reason(failure, case, response) -> str | None:
    """Why this failure is a known false positive, or None to keep it."""
    if type(failure).__name__ != "RejectedPositiveData":
        return None
    problem = _problem(response)
    code, detail = problem.get("code"), problem.get("detail") or ""
    if response.status_code == 429 and code == "RATE_LIMITED":
        # A quota (docs/reliability.md, "Abuse limits"), not a schema rule;
        # start the app with the limits off for full coverage.
        return "rate limited"
    if response.status_code == 422 and code == "IDEMPOTENCY_KEY_REUSED":
        # Generated keys repeat ("0", "a") across bodies; 422 is the contract.
        headers = {k.lower() for k in (case.headers or {})}
        return "Idempotency-Key reused with another body" if "idempotency-key" in headers else None
    if response.status_code != 400 or code != "VALIDATION_FAILED":
        return None
    name = problem.get("field")
    if INTEGRAL_FLOAT.search(detail):
        sent = _sent(case.body, name)
        integral = isinstance(sent, float) and sent.is_integer()
        return "integer field sent as an integral float" if integral else None
    if name in DATE_TIME_FIELDS and isinstance(case.body, dict):
        sent = case.body.get(name)
        if isinstance(sent, str) and not RFC3339.match(sent):
            return "a date-time field sent a string that is not RFC 3339"
    if detail in CROSS_FIELD:
        return CROSS_FIELD[detail]
    if DUPLICATE_PRODUCT.match(detail):
        return "the same productId twice in items"
    return None


@schemathesis.hook
def filter_failure(context, failure, case, response):
    reason = _reason(failure, case, response)
    if reason is None:
        return True
    log = os.environ.get("FUZZ_DROPPED_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{failure.operation}\t{reason}\n")
    return False
