"""Property tests of `salve serve` from its OpenAPI document.

schemathesis generates requests for every operation of
`schemas/openapi.json` (valid and invalid parameters and bodies) and sends
them to a live server; each answer must not be a 5xx and must conform to
the document (status, content type, headers, body schema).

Reads carry an RFC 9421 signature in salve's profile (see
`src/serve/signature.rs`), made here by `SalveSignature` with the keys
that scripts/api-properties.sh created (each test runs once per key). The signature must cover
the exact URL and body sent, so it is made on the prepared request (a
`requests` auth); schemathesis sees it as the operation's declared auth
(`httpSignature`, the `Signature` header) through `SignedReads`, which
marks the request to be signed. Its own probes (no `Signature`, or a made
up one) are sent as they are, and must be refused.
`test_signing_is_accepted` shows first that the server takes these
signatures, so that the property tests cannot pass by being refused at
the door.

Environment: SALVE_URL (the server), SALVE_OPENAPI (the document),
SALVE_KEYS (key files of an agent, an approver and an auditor, separated
by ':'), SALVE_JOB (a job the agent submitted in `dev`).
"""

import base64
import hashlib
import os
import secrets
import time
import tomllib
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

BASE = os.environ["SALVE_URL"].rstrip("/")
COMPONENTS = '("@method" "@target-uri" "content-digest")'


class Key:
    """A salve private key file (TOML: name, role, id, secret_key)."""

    def __init__(self, path):
        with open(path, "rb") as f:
            file = tomllib.load(f)
        self.id = file["id"]
        self.role = file["role"]
        seed = base64.b64decode(file["secret_key"])
        self.private = Ed25519PrivateKey.from_private_bytes(seed)


class SalveSignature(requests.auth.AuthBase):
    """Signs each prepared request with `key`, so the exact URL and body
    sent are covered."""

    def __init__(self, key):
        self.key = key

    def __call__(self, request):
        # Only what asks to be signed: schemathesis's auth probes are not.
        if request.headers.get("Signature") != SIGN_ME:
            return request
        key = self.key
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
        url = urlsplit(request.url)
        target = f"{url.scheme}://{url.netloc}{request.path_url}"
        params = (
            f'{COMPONENTS};created={int(time.time())};nonce="{secrets.token_urlsafe(18)}"'
            f';keyid="{key.id}";alg="ed25519"'
        )
        base = (
            f'"@method": {request.method}\n'
            f'"@target-uri": {target}\n'
            f'"content-digest": {digest}\n'
            f'"@signature-params": {params}'
        )
        signature = base64.b64encode(key.private.sign(base.encode())).decode()
        request.headers["Content-Digest"] = digest
        request.headers["Signature-Input"] = f"salve={params}"
        request.headers["Signature"] = f"salve=:{signature}:"
        return request


# The `Signature` of a request SalveSignature is to sign.
SIGN_ME = "salve=:to-be-signed:"

KEYS = [Key(p) for p in os.environ["SALVE_KEYS"].split(":")]
SESSION = requests.Session()
SESSION.auth = SalveSignature(KEYS[0])
# A job that ran (scripts/api-properties.sh submitted it), for the reads
# generated ids never find.
JOB = os.environ["SALVE_JOB"]

schema = schemathesis.openapi.from_path(os.environ["SALVE_OPENAPI"])


@schema.auth(refresh_interval=None, retry_on=[])
class SignedReads:
    """The operation's declared auth: the request is to be signed."""

    def get(self, case, ctx):
        return SIGN_ME

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Signature": data}


def signed_get(key, path):
    SESSION.auth.key = key
    return SESSION.get(f"{BASE}{path}", headers={"Signature": SIGN_ME}, timeout=30)


def test_signing_is_accepted():
    for key in KEYS:
        response = signed_get(key, "/v1/jobs")
        assert response.status_code == 200, response.text
    for headers in [{}, {"Signature": "salve=:bm90IGEgc2lnbmF0dXJl:"}]:
        refused = SESSION.get(f"{BASE}/v1/jobs", headers=headers)
        assert refused.status_code == 401, refused.text


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.role)
def test_reads_of_a_job_that_ran_conform(key):
    """Every read of JOB, by each role (the approver is trusted for `dev`,
    where JOB needs no approval, so all three see it): 200, and what is
    answered conforms to the document."""
    deadline = time.time() + 60
    while True:
        review = signed_get(key, f"/v1/jobs/{JOB}")
        if review.status_code != 200 or review.json()["job"]["state"] == "succeeded" or time.time() > deadline:
            break
        time.sleep(0.2)
    reads = {
        "/v1/jobs": "/v1/jobs?state=succeeded&limit=10",
        "/v1/jobs/{id}": f"/v1/jobs/{JOB}",
        "/v1/jobs/{id}/events": f"/v1/jobs/{JOB}/events",
        "/v1/jobs/{id}/evidence": f"/v1/jobs/{JOB}/evidence?artifact=true",
        "/v1/audit/checkpoint": "/v1/audit/checkpoint",
    }
    for template, path in reads.items():
        deadline = time.time() + 30
        response = signed_get(key, path)
        # Evidence waits for the next checkpoint: 503 with Retry-After.
        while response.status_code == 503 and time.time() < deadline:
            time.sleep(0.5)
            response = signed_get(key, path)
        assert response.status_code == 200, (path, response.status_code, response.text[:500])
        schema[template]["GET"].validate_response(response)
    assert review.json()["job"]["state"] == "succeeded", review.text
    listed = signed_get(key, "/v1/jobs?state=succeeded").json()["jobs"]
    assert [job["id"] for job in listed] == [JOB], listed


@schema.parametrize()
@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.role)
@settings(
    max_examples=int(os.environ.get("SALVE_API_EXAMPLES", "100")),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api(case, key):
    SESSION.auth.key = key
    excluded = []
    if case.method == "POST":
        # A write is a signed object (an envelope, a vote): data generated
        # from its schema cannot carry a signature that verifies, so it is
        # refused (400 or 403) however well formed, and "schema-valid data
        # is accepted" cannot hold. Every other check does.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=BASE, session=SESSION, timeout=30, excluded_checks=excluded)
