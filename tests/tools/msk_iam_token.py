#!/usr/bin/env python3
"""The MSK IAM token AWS's own signer builds for fixed inputs: the reference the agent's
token (src/kafka/msk_iam) must equal byte for byte.

    echo '{"access_key": "AKID", "secret_key": "SECRET", "session_token": null,
           "region": "us-east-1", "time": 1700000000}' | msk_iam_token.py

prints one JSON line: {"token", "expiry_ms", "user_agent", "url"}. "url" is the token
decoded (the presigned URL), only to read a mismatch; the token is what is compared.

The signer appends "User-Agent=aws-msk-iam-sasl-signer-python/<version>" to the URL after
signing (unsigned, but inside the token). An optional "user_agent" in the input replaces
that one string, so the placement and encoding of another client's user agent (ours is
journald-kafka/<version>) can be checked against the signer too; without it the token is
exactly what the signer sends.

It runs the real signer (pip install aws-msk-iam-sasl-signer-python==1.0.2; botocore comes
with it) through its public entry point, generate_auth_token_from_credentials_provider, with
the clock frozen at "time": botocore's SigV4 signer takes its time from
botocore.compat.get_current_datetime, imported into botocore.auth by name, so that name is
what is replaced (botocore before 1.33 called datetime.datetime.utcnow() through
botocore.auth.datetime instead: replaced too when present). Nothing is reimplemented here.
"""
import base64
import datetime
import importlib.metadata
import json
import sys
import types

import botocore.auth
from botocore.credentials import CredentialProvider, Credentials
from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

SIGNER = "aws-msk-iam-sasl-signer-python"
PINNED = "1.0.2"


class Fixed(CredentialProvider):
    """The credentials given on stdin, as the signer's provider interface wants them."""

    METHOD = "fixed"

    def __init__(self, access_key, secret_key, token):
        super().__init__()
        self._creds = Credentials(access_key, secret_key, token)

    def load(self):
        return self._creds


def freeze(at):
    """Every clock botocore's signer may read now says `at` (naive UTC, as botocore uses)."""
    naive = at.replace(tzinfo=None)
    if hasattr(botocore.auth, "get_current_datetime"):
        botocore.auth.get_current_datetime = lambda remove_tzinfo=True: (
            naive if remove_tzinfo else at)

    class FrozenDatetime(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return naive

        @classmethod
        def now(cls, tz=None):
            return at if tz is not None else naive

    botocore.auth.datetime = types.SimpleNamespace(
        datetime=FrozenDatetime, timedelta=datetime.timedelta, timezone=datetime.timezone)


def main():
    version = importlib.metadata.version(SIGNER)
    if version != PINNED:
        sys.exit(f"{SIGNER} {version} installed, these vectors are for {PINNED}")
    given = json.load(sys.stdin)
    at = datetime.datetime.fromtimestamp(given["time"], tz=datetime.timezone.utc)
    freeze(at)
    ua = given.get("user_agent")
    if ua is not None:
        # Module-level name (no class-private mangling): __construct_auth_token looks it
        # up at call time.
        MSKAuthTokenProvider.__get_user_agent__ = lambda: ua
    else:
        ua = f"{SIGNER}/{version}"
    provider = Fixed(given["access_key"], given["secret_key"], given.get("session_token"))
    token, expiry_ms = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider(
        given["region"], provider)
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    # The frozen clock must be the one the signer read: a botocore that takes its time
    # elsewhere would otherwise give a token for "now" without a word.
    if (f"X-Amz-Date={at.strftime('%Y%m%dT%H%M%SZ')}&" not in url
            or expiry_ms != (int(given["time"]) + 900) * 1000):
        sys.exit(f"the signer did not sign at the given time: {url}")
    print(json.dumps({"token": token, "expiry_ms": expiry_ms,
                      "user_agent": ua, "url": url}))


if __name__ == "__main__":
    main()
