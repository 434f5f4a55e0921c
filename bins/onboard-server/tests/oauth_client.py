"""A standard OAuth 2.0 client (requests-oauthlib) and JWT validator (PyJWT) against
Onboard's token endpoint, as a device platform would use them. Prints a JSON report.

usage: oauth_client.py BASE_URL CLIENT_ID CLIENT_SECRET CA_FILE
"""
import json
import ssl
import sys

import jwt
import requests
from oauthlib.oauth2 import BackendApplicationClient, InvalidClientError
from requests.auth import HTTPBasicAuth
from requests_oauthlib import OAuth2Session

tls, client_id, secret, ca = sys.argv[1:5]
token_url = f"{tls}/iot/token"

discovery = requests.get(f"{tls}/.well-known/openid-configuration", verify=ca).json()
assert discovery["issuer"] == tls, discovery
assert discovery["token_endpoint"] == f"{tls}/iot/token", discovery
ctx = ssl.create_default_context(cafile=ca)
jwks = jwt.PyJWKClient(f"{tls}/.well-known/jwks.json", ssl_context=ctx)


def run(method):
    session = OAuth2Session(client=BackendApplicationClient(client_id=client_id))
    if method == "basic":
        token = session.fetch_token(
            token_url, auth=HTTPBasicAuth(client_id, secret), verify=ca
        )
    else:
        token = session.fetch_token(
            token_url,
            client_id=client_id,
            client_secret=secret,
            include_client_id=True,
            verify=ca,
        )
    key = jwks.get_signing_key_from_jwt(token["access_token"])
    claims = jwt.decode(
        token["access_token"],
        key.key,
        algorithms=["ES256"],
        audience="onboard-iot",
        issuer=discovery["issuer"],
        options={"require": ["exp", "iat", "sub", "iss", "aud"]},
    )
    config = session.get(f"{tls}/iot/config", verify=ca)
    return {
        "access_token": token["access_token"],
        "token_type": token["token_type"],
        "expires_in": token["expires_in"],
        "claims": claims,
        "config_status": config.status_code,
        "config": config.json(),
    }


report = {"basic": run("basic"), "post": run("post")}

try:
    OAuth2Session(client=BackendApplicationClient(client_id=client_id)).fetch_token(
        token_url, auth=HTTPBasicAuth(client_id, secret + "x"), verify=ca
    )
    report["wrong_secret"] = "accepted"
except InvalidClientError as e:
    report["wrong_secret"] = e.error

# A token whose claims were changed no longer verifies at the server.
head, body, sig = report["basic"]["access_token"].split(".")
forged = jwt.utils.base64url_encode(
    json.dumps({**report["basic"]["claims"], "sub": "00000000-0000-0000-0000-000000000000"}).encode()
).decode()
r = requests.get(
    f"{tls}/iot/config",
    headers={"Authorization": f"Bearer {head}.{forged}.{sig}"},
    verify=ca,
)
report["tampered_status"] = r.status_code

print(json.dumps(report))
