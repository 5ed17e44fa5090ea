#!/usr/bin/env python3
"""The code an authenticator app shows (RFC 6238: HMAC-SHA-1, 30 s steps, 6
digits) for a base32 secret, as `POST /account/second-factor` hands it out.

    scripts/totp.py .dev/demo-totp-secret     # a file holding the secret
    scripts/totp.py JBSWY3DPEHPK3PXP          # or the secret itself

Also a module: code(secret, at) for the tests and scripts that sign in with a
second factor (make dev's demo admin, the contract's admins)."""
import base64, hashlib, hmac, os, struct, sys, time

STEP = 30


def code(secret, at=None, digits=6):
    """The code of `secret` (base32) at `at` (seconds; now if None)."""
    key = base64.b32decode(secret.strip().upper() + "=" * (-len(secret.strip()) % 8))
    counter = int(time.time() if at is None else at) // STEP
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10 ** digits).zfill(digits)


def step(at=None):
    """The step a code of `at` belongs to."""
    return int(time.time() if at is None else at) // STEP


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    given = sys.argv[1]
    print(code(open(given).read() if os.path.isfile(given) else given))
