"""Secrets the Python checks use or receive through the watch (passwords,
tokens, device proofs), noted in TEST_SECRETS_FILE: make test's last stage
checks that none of them is in the watch's logs."""
import os


def note(secret):
    path = os.environ.get("TEST_SECRETS_FILE")
    if path and isinstance(secret, str) and len(secret) >= 8:
        with open(path, "a") as secrets:
            secrets.write(secret + "\n")


def note_answer(answer):
    """Every token and proof an answer of the API carries."""
    if not isinstance(answer, dict):
        return
    for field in ("access_token", "refresh_token", "device", "mfa_token", "secret"):
        note(answer.get(field))
    for code in answer.get("recovery_codes") or []:
        note(code)
