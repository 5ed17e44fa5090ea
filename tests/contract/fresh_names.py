"""Schemathesis hooks for the stateful run of tests/contract/run.py: every
registration it sends names a username of its own. Generated usernames repeat
(Hypothesis reuses small values), so without this most registrations meet 409
and the logins that follow them the lockout their name collected from
generated logins: the chains would stop at their first link. An address, when
the registration gives one, is made unique and valid too (generated ones
repeat, meet the per-address window and the stricter rule: 429 and 400)."""
import uuid

import schemathesis


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.operation.path == "/register" and isinstance(case.body, dict) and "username" in case.body:
        case.body["username"] = f"chain-{uuid.uuid4().hex[:16]}"
        if "email" in case.body:
            case.body["email"] = f"{case.body['username']}@contract.test"
