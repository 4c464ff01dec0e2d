"""Time-based one-time passwords (RFC 6238, as authenticator apps use them), via pyotp.

A code is accepted for its own 30-second step and one step either side (clock skew),
and only if its step is newer than the last one accepted for the user: a code seen
once (over a shoulder, in a proxy log) never logs in again.
"""

from __future__ import annotations

import hmac

import pyotp

ISSUER = "inhouse"
STEP_SECONDS = 30
SKEW_STEPS = 1


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads (as text or a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step ``code`` belongs to, if it is valid around ``now``; else None."""
    code = code.strip()
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = int(now // STEP_SECONDS)
    found = None
    for step in range(current - SKEW_STEPS, current + SKEW_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step  # no early exit: every candidate costs the same
    return found
