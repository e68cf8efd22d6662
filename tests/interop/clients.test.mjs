// OAuth clients no one here wrote, against the real handler on the embedded store: panva's
// openid-client and oauth4webapi configure themselves from the discovery document, then refresh,
// revoke and introspect (client_secret_basic, as a resource server added with
// `handler clients add`) with the endpoints it names. Run by run.sh (HANDLER_BIN = the binary
// under test).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import * as client from 'openid-client';
import * as oauth from 'oauth4webapi';
import * as jose from 'jose';

const BIN = process.env.HANDLER_BIN;
const PASSWORD = 'amber falcon drifts north';
let server, issuer, env, resourceServer;

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

before(async () => {
  assert.ok(BIN, 'HANDLER_BIN names the handler binary');
  const port = await freePort();
  issuer = `http://127.0.0.1:${port}/api`;
  env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('jwtrefreshtoken'))),
    FUNCTIONS_CUSTOMHANDLER_PORT: String(port),
    JwtRefreshToken__Descriptor__Issuer: issuer,
    JwtRefreshToken__Descriptor__Audience: 'interop',
    JwtRefreshToken__Descriptor__AlgorithmKey: 'Z-CwLcjDk02eEppH7j0U-AVm1mSKsbpp2QJ8MXsWRiS6vKcbBufSWm-x0VHFckSw',
    JwtRefreshToken__Embedded__Path: mkdtempSync(join(tmpdir(), 'interop-')),
    RUST_LOG: 'warn',
  };
  const add = spawnSync(BIN, ['user', 'add', 'alice', '--password-stdin', '--create'], { env, input: `${PASSWORD}\n` });
  assert.equal(add.status, 0, String(add.stderr));
  // The resource server's credentials, printed once as `client_id=… client_secret=…`.
  const clientAdd = spawnSync(BIN, ['clients', 'add', 'orders-api'], { env });
  assert.equal(clientAdd.status, 0, String(clientAdd.stderr));
  resourceServer = Object.fromEntries(String(clientAdd.stdout).trim().split(' ').map((f) => f.split('=')));
  server = spawn(BIN, [], { env, stdio: 'ignore' });
  for (let i = 0; i < 200; i++) {
    try { if ((await fetch(`http://127.0.0.1:${port}/`)).ok) return; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the handler did not start');
});

after(() => server?.kill());

async function passwordLogin() {
  const r = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', username: 'alice', password: PASSWORD }),
  });
  assert.equal(r.status, 200);
  return r.json();
}

test('openid-client: discovery from the issuer, refresh_token grant, revocation', async () => {
  const config = await client.discovery(new URL(issuer), 'interop-app', undefined, client.None(), {
    execute: [client.allowInsecureRequests],
  });
  const meta = config.serverMetadata();
  assert.equal(meta.issuer, issuer);
  assert.equal(meta.token_endpoint, `${issuer}/token`);
  const first = await passwordLogin();
  const refreshed = await client.refreshTokenGrant(config, first.refresh_token);
  assert.equal(refreshed.token_type.toLowerCase(), 'bearer');
  assert.ok(refreshed.access_token && refreshed.refresh_token && refreshed.refresh_token !== first.refresh_token);
  await client.tokenRevocation(config, refreshed.refresh_token);
  await assert.rejects(client.refreshTokenGrant(config, refreshed.refresh_token), (e) => {
    assert.equal(e.error, 'invalid_grant');
    return true;
  });
});

test('oauth4webapi: OIDC and RFC 8414 discovery, refresh with its own response checks', async () => {
  const issuerUrl = new URL(issuer);
  // RFC 8414 §3.1 puts its document at /.well-known/oauth-authorization-server/api, outside the
  // Functions route prefix, where no function can be; the document is served under the prefix
  // instead, so it is fetched from there and checked by oauth4webapi's own validation.
  const rfc8414 = await fetch(`${issuer}/.well-known/oauth-authorization-server`);
  assert.equal((await oauth.processDiscoveryResponse(issuerUrl, rfc8414)).issuer, issuer);
  for (const algorithm of ['oidc']) {
    const response = await oauth.discoveryRequest(issuerUrl, { algorithm, [oauth.allowInsecureRequests]: true });
    const as = await oauth.processDiscoveryResponse(issuerUrl, response);
    assert.equal(as.issuer, issuer, algorithm);
    const c = { client_id: 'interop-app' };
    const first = await passwordLogin();
    const r = await oauth.refreshTokenGrantRequest(as, c, oauth.None(), first.refresh_token, {
      [oauth.allowInsecureRequests]: true,
    });
    const tokens = await oauth.processRefreshTokenResponse(as, c, r);
    assert.ok(tokens.access_token);
    assert.notEqual(tokens.refresh_token, first.refresh_token);
  }
});

test('openid-client: tokenIntrospection with client_secret_basic follows the session', async () => {
  // oauth4webapi form-encodes the id and secret before Basic encoding (RFC 6749 §2.3.1), so
  // `orders-api` goes over the wire as `orders%2Dapi`.
  const config = await client.discovery(
    new URL(issuer),
    resourceServer.client_id,
    undefined,
    client.ClientSecretBasic(resourceServer.client_secret),
    { execute: [client.allowInsecureRequests] },
  );
  const meta = config.serverMetadata();
  assert.equal(meta.introspection_endpoint, `${issuer}/introspect`);
  assert.deepEqual(meta.introspection_endpoint_auth_methods_supported, ['client_secret_basic']);
  const pair = await passwordLogin();
  const active = await client.tokenIntrospection(config, pair.access_token);
  assert.equal(active.active, true);
  assert.equal(active.username, 'alice');
  assert.equal(active.token_type, 'Bearer');
  assert.equal(active.iss, issuer);
  assert.equal(active.aud, 'interop');
  assert.equal(typeof active.sub, 'string');
  const refresh = await client.tokenIntrospection(config, pair.refresh_token, { token_type_hint: 'refresh_token' });
  assert.deepEqual({ ...refresh }, { active: false }, 'a refresh token is never active here');
  await client.tokenRevocation(config, pair.refresh_token);
  const ended = await client.tokenIntrospection(config, pair.access_token);
  assert.deepEqual({ ...ended }, { active: false }, 'the revoked session ends its access token');
  const wrong = await client.discovery(new URL(issuer), resourceServer.client_id, undefined,
    client.ClientSecretBasic('not-the-secret'), { execute: [client.allowInsecureRequests] });
  // A 401 with a challenge surfaces as the parsed WWW-Authenticate: Basic, realm "introspection".
  await assert.rejects(client.tokenIntrospection(wrong, pair.access_token), (e) => {
    assert.equal(e.status, 401);
    assert.deepEqual(e.cause.map((c) => [c.scheme, c.parameters.realm]), [['basic', 'introspection']]);
    return true;
  });
});

// A second handler of the same kind with extra settings (DPoP nonces required), on its own store.
async function launch(extra) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}/api`;
  const e = {
    ...env,
    ...extra,
    FUNCTIONS_CUSTOMHANDLER_PORT: String(port),
    JwtRefreshToken__Descriptor__Issuer: base,
    JwtRefreshToken__Embedded__Path: mkdtempSync(join(tmpdir(), 'interop-')),
  };
  const add = spawnSync(BIN, ['user', 'add', 'alice', '--password-stdin', '--create'], { env: e, input: `${PASSWORD}\n` });
  assert.equal(add.status, 0, String(add.stderr));
  const child = spawn(BIN, [], { env: e, stdio: 'ignore' });
  for (let i = 0; i < 200; i++) {
    try { if ((await fetch(`http://127.0.0.1:${port}/`)).ok) return { child, base }; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill();
  throw new Error('the second handler did not start');
}

function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
}

// oauth4webapi's own DPoP (RFC 9449): its key (non-extractable ES256), its proofs, its nonce cache.
async function dpopSession(base) {
  const as = await oauth.processDiscoveryResponse(new URL(base),
    await oauth.discoveryRequest(new URL(base), { algorithm: 'oidc', [oauth.allowInsecureRequests]: true }));
  assert.deepEqual(as.dpop_signing_alg_values_supported, ['ES256', 'EdDSA', 'RS256']);
  const c = { client_id: 'interop-app' };
  const keyPair = await oauth.generateKeyPair('ES256');
  const dpop = oauth.DPoP(c, keyPair);
  const opts = { DPoP: dpop, [oauth.allowInsecureRequests]: true };
  // The password grant through oauth4webapi's generic token endpoint request, retried once when the
  // server asks for a nonce (use_dpop_nonce), as oauth4webapi's documentation prescribes.
  const withNonceRetry = async (request) => {
    try {
      return await request();
    } catch (e) {
      if (!oauth.isDPoPNonceError(e)) throw e;
      return request();
    }
  };
  const login = await withNonceRetry(async () => oauth.processGenericTokenEndpointResponse(as, c,
    await oauth.genericTokenEndpointRequest(as, c, oauth.None(), 'password',
      new URLSearchParams({ username: 'alice', password: PASSWORD }), opts)));
  return { as, c, dpop, opts, login, keyPair, withNonceRetry };
}

test('oauth4webapi: a DPoP-bound login, refresh and resource request with its own DPoP', async () => {
  const { as, c, dpop, opts, login, withNonceRetry } = await dpopSession(issuer);
  assert.equal(login.token_type, 'dpop');
  assert.equal(claims(login.access_token).cnf.jkt, await dpop.calculateThumbprint());
  const refreshed = await withNonceRetry(async () => oauth.processRefreshTokenResponse(as, c,
    await oauth.refreshTokenGrantRequest(as, c, oauth.None(), login.refresh_token, opts)));
  assert.equal(refreshed.token_type, 'dpop');
  assert.notEqual(refreshed.refresh_token, login.refresh_token);
  // Authorization: DPoP plus a proof with ath, on the service's own resource route.
  const sessions = await oauth.protectedResourceRequest(refreshed.access_token, 'GET',
    new URL(`${issuer}/sessions`), new Headers(), null, opts);
  assert.equal(sessions.status, 200);
  assert.equal((await sessions.json()).sessions.length >= 1, true);
  // Another key (a thief's copy of the refresh token) is refused, and the session is not burnt.
  const thief = oauth.DPoP(c, await oauth.generateKeyPair('ES256'));
  await assert.rejects(
    (async () => oauth.processRefreshTokenResponse(as, c, await oauth.refreshTokenGrantRequest(as, c, oauth.None(),
      refreshed.refresh_token, { DPoP: thief, [oauth.allowInsecureRequests]: true })))(),
    (e) => { assert.equal(e.error, 'invalid_dpop_proof'); return true; });
  const again = await oauth.processRefreshTokenResponse(as, c,
    await oauth.refreshTokenGrantRequest(as, c, oauth.None(), refreshed.refresh_token, opts));
  assert.equal(again.token_type, 'dpop');
  // Introspection reports the binding (RFC 9449 §6.2).
  const cfg = await client.discovery(new URL(issuer), resourceServer.client_id, undefined,
    client.ClientSecretBasic(resourceServer.client_secret), { execute: [client.allowInsecureRequests] });
  const active = await client.tokenIntrospection(cfg, again.access_token);
  assert.equal(active.token_type, 'DPoP');
  assert.deepEqual(active.cnf, { jkt: await dpop.calculateThumbprint() });
});

test('oauth4webapi: a DPoP nonce round trip when the service requires nonces', async () => {
  const { child, base } = await launch({ JwtRefreshToken__Dpop__RequireNonce: 'true' });
  try {
    // oauth4webapi sends a proof without a nonce, gets use_dpop_nonce with DPoP-Nonce, caches the
    // nonce and (on the retry) sends it: the login succeeds.
    const { as, c, dpop, opts, login } = await dpopSession(base);
    assert.equal(login.token_type, 'dpop');
    assert.equal(claims(login.access_token).cnf.jkt, await dpop.calculateThumbprint());
    // The answer carried the next nonce, so the refresh needs no retry.
    const refreshed = await oauth.processRefreshTokenResponse(as, c,
      await oauth.refreshTokenGrantRequest(as, c, oauth.None(), login.refresh_token, opts));
    assert.equal(refreshed.token_type, 'dpop');
    // A proof without a nonce from a client that never saw one.
    const fresh = oauth.DPoP(c, await oauth.generateKeyPair('ES256'));
    await assert.rejects(
      (async () => oauth.processRefreshTokenResponse(as, c, await oauth.refreshTokenGrantRequest(as, c, oauth.None(),
        refreshed.refresh_token, { DPoP: fresh, [oauth.allowInsecureRequests]: true })))(),
      (e) => { assert.ok(oauth.isDPoPNonceError(e), String(e)); return true; });
  } finally {
    child.kill();
  }
});

test('jose: an API verifies access tokens with the JWKS the discovery document names (docs/resource-servers.md)', async () => {
  const es256 = spawnSync(BIN, ['keys', 'generate', '--algorithm', 'ES256'], { encoding: 'utf8' });
  assert.equal(es256.status, 0, es256.stderr);
  const { child, base } = await launch({
    JwtRefreshToken__Descriptor__Algorithm: 'ES256',
    JwtRefreshToken__Descriptor__AlgorithmKey: es256.stdout,
  });
  try {
    const meta = await (await fetch(`${base}/.well-known/openid-configuration`)).json();
    // The snippet of docs/resource-servers.md, as an API written with jose would run it.
    const JWKS = jose.createRemoteJWKSet(new URL(meta.jwks_uri));
    const verifyAccessToken = (token) => jose.jwtVerify(token, JWKS, {
      issuer: meta.issuer, audience: 'interop', typ: 'at+jwt', algorithms: ['ES256', 'EdDSA'],
    });
    const r = await fetch(`${base}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'alice', password: PASSWORD }),
    });
    const { access_token: token } = await r.json();
    const { payload, protectedHeader } = await verifyAccessToken(token);
    assert.equal(payload.name, 'alice');
    assert.equal(protectedHeader.typ, 'at+jwt');
    // Another audience, a forged signature and an HS256 token are refused.
    await assert.rejects(jose.jwtVerify(token, JWKS, { issuer: meta.issuer, audience: 'other', typ: 'at+jwt' }));
    await assert.rejects(verifyAccessToken(`${token.slice(0, -2)}${token.endsWith('AA') ? 'BB' : 'AA'}`));
    const hs = await new jose.SignJWT({ sub: 'x' }).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: protectedHeader.kid })
      .setIssuer(meta.issuer).setAudience('interop').setExpirationTime('5m').sign(new TextEncoder().encode('k'.repeat(32)));
    await assert.rejects(verifyAccessToken(hs));
  } finally {
    child.kill();
  }
});
