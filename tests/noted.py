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
    for field in ("access_token", "refresh_token", "device"):
        note(answer.get(field) if isinstance(answer, dict) else None)
