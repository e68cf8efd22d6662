"""Authlib (PyPI, pinned) against the handler: RFC 8414 metadata validated by Authlib's own model,
then a refresh through its requests client with the token endpoint the document names, and
introspection (client_secret_basic) as a resource server added with `handler clients add`."""
import os
import socket
import subprocess
import sys
import tempfile
import time

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

PASSWORD = "amber falcon drifts north"


def main(binary: str) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    issuer = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("jwtrefreshtoken")}
    env.update(
        FUNCTIONS_CUSTOMHANDLER_PORT=str(port),
        JwtRefreshToken__Descriptor__Issuer=issuer,
        JwtRefreshToken__Descriptor__Audience="interop",
        JwtRefreshToken__Descriptor__AlgorithmKey="Z-CwLcjDk02eEppH7j0U-AVm1mSKsbpp2QJ8MXsWRiS6vKcbBufSWm-x0VHFckSw",
        JwtRefreshToken__Embedded__Path=tempfile.mkdtemp(),
        RUST_LOG="warn",
    )
    added = subprocess.run([binary, "user", "add", "alice", "--password-stdin", "--create"], input=PASSWORD + "\n",
                           env=env, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    client_add = subprocess.run([binary, "clients", "add", "billing.api"], env=env, capture_output=True, text=True)
    assert client_add.returncode == 0, client_add.stderr
    resource_server = dict(field.split("=", 1) for field in client_add.stdout.split())
    server = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    passed = failed = 0
    try:
        for _ in range(200):
            try:
                if requests.get(f"http://127.0.0.1:{port}/", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.05)
        checks = []

        def check(name, fn):
            checks.append((name, fn))

        state = {}

        def metadata():
            doc = requests.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=5).json()
            meta = AuthorizationServerMetadata(doc)
            meta.validate_issuer()
            meta.validate_token_endpoint()
            meta.validate_jwks_uri()
            meta.validate_grant_types_supported()
            meta.validate_token_endpoint_auth_methods_supported()
            meta.validate_revocation_endpoint()
            meta.validate_revocation_endpoint_auth_methods_supported()
            meta.validate_introspection_endpoint()
            meta.validate_introspection_endpoint_auth_methods_supported()
            assert meta["introspection_endpoint_auth_methods_supported"] == ["client_secret_basic"]
            # RFC 9449 §5.1 metadata: a JSON array of JWS algorithm names, none of them symmetric.
            algs = meta["dpop_signing_alg_values_supported"]
            assert algs == ["ES256", "EdDSA", "RS256"], algs
            assert meta["issuer"] == issuer
            state["meta"] = meta

        def refresh():
            meta = state["meta"]
            session = OAuth2Session("interop-app", token_endpoint_auth_method="none")
            first = session.fetch_token(meta["token_endpoint"], grant_type="password", username="alice", password=PASSWORD)
            second = session.refresh_token(meta["token_endpoint"], refresh_token=first["refresh_token"])
            assert second["access_token"] and second["refresh_token"] != first["refresh_token"], second
            session.revoke_token(meta["revocation_endpoint"], second["refresh_token"], token_type_hint="refresh_token")
            again = requests.post(meta["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}, timeout=5)
            assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text

        def introspect():
            meta = state["meta"]
            login = OAuth2Session("interop-app", token_endpoint_auth_method="none")
            pair = login.fetch_token(meta["token_endpoint"], grant_type="password", username="alice", password=PASSWORD)
            rs = OAuth2Session(resource_server["client_id"], resource_server["client_secret"],
                               token_endpoint_auth_method="client_secret_basic")
            active = rs.introspect_token(meta["introspection_endpoint"], token=pair["access_token"]).json()
            assert active["active"] is True and active["username"] == "alice", active
            assert active["token_type"] == "Bearer" and active["iss"] == issuer, active
            login.revoke_token(meta["revocation_endpoint"], pair["refresh_token"], token_type_hint="refresh_token")
            ended = rs.introspect_token(meta["introspection_endpoint"], token=pair["access_token"])
            assert ended.status_code == 200 and ended.json() == {"active": False}, ended.text
            wrong = OAuth2Session(resource_server["client_id"], "not-the-secret",
                                  token_endpoint_auth_method="client_secret_basic")
            refused = wrong.introspect_token(meta["introspection_endpoint"], token=pair["access_token"])
            assert refused.status_code == 401 and refused.json()["error"] == "invalid_client", refused.text
            assert refused.headers["WWW-Authenticate"].startswith("Basic "), refused.headers

        check("authlib validates the RFC 8414 metadata", metadata)
        check("authlib password grant, refresh and revocation with the named endpoints", refresh)
        check("authlib introspection with client_secret_basic follows the session", introspect)
        for name, fn in checks:
            try:
                fn()
                print(f"ok    {name}")
                passed += 1
            except Exception as e:  # noqa: BLE001 - report every failure, then fail the run
                print(f"FAIL  {name}: {e!r}")
                failed += 1
    finally:
        server.terminate()
        server.wait()
    print(f"authlib: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1])
