"""Schemathesis hooks for the admin API's run of tests/contract/run.py (every
phase but the stateful one): every act names the one real user the run made
(CONTRACT_ADMIN_TARGET). A generated username would be nobody's: only 404s,
no answer of the user's shape to check. (The stateful run reaches the acts
through the links instead, on users its own registrations made.)"""
import os

import schemathesis


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.operation.path.startswith("/admin/users/"):
        case.path_parameters["username"] = os.environ["CONTRACT_ADMIN_TARGET"]
