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

# Rules between two fields, or between the request and stored data.
CROSS_FIELD = {
    "finishedAt: must be after startedAt": "finishedAt not after startedAt",
    "issueEndsAt: must be after issueStartsAt": "issueEndsAt not after issueStartsAt",
    "items: the order total is too large": "price x quantity over i64 (stored prices)",
}
DUPLICATE_PRODUCT = re.compile(r"^items: product -?\d+ appears more than once$")


def _problem(response) -> dict:
    try:
        body = json.loads(response.content)
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


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
