// Browser client of jwt-refresh-token with cookie transport.
//
// Where things live:
//   - the refresh token: only in the HttpOnly `__Host-refresh_token` cookie of the token service;
//     this script can never read it, and no response body it sees contains it;
//   - the access token: in this object's memory (and, for a moment, in a BroadcastChannel message
//     to this origin's other tabs); never in localStorage, sessionStorage or a cookie;
//   - the anti-forgery (XSRF) value: from the `X-XSRF-TOKEN` response header of login and refresh,
//     or on a fresh load from the script-readable `XSRF-TOKEN` cookie when this page can see it
//     (service on the same host). When it cannot (service on another host of the same site), a
//     copy is kept in localStorage under XSRF_STORAGE_KEY: it is not a credential by itself (it
//     is bound to the session, and useless without the HttpOnly cookie).
//
//   - the DPoP key (RFC 9449): a WebCrypto ECDSA P-256 key pair generated *non-extractable* and
//     kept in IndexedDB (structured clone keeps it non-extractable), so no script — this one, an
//     extension, an XSS payload — can ever read the private key. Every token request carries a
//     proof signed with it, so the session and its tokens are bound to this browser: a copied
//     cookie and XSRF value, or a copied access token, are useless anywhere else.
//
// Refreshes are single-flight: within a tab one promise is shared, across tabs the Web Locks API
// lets one tab refresh while the others wait and receive its result over a BroadcastChannel.
//
// Second factors and passkeys: a password login of a user with a second factor answers
// `mfa_required` (thrown as MfaRequiredError); its `mfa_token` is held by the caller in memory
// for the second step (a code, a recovery code or a passkey) and is never stored. Passkeys go
// through `navigator.credentials`; the service speaks WebAuthn's JSON form (binary members
// base64url), converted here both ways. A passkey sign-in ends like a password login: cookie
// transport, a DPoP proof, the access token in memory.

export const XSRF_STORAGE_KEY = 'jwt-refresh-token:xsrf-token';
const XSRF_COOKIE = 'XSRF-TOKEN';
const LOCK_NAME = 'jwt-refresh-token:refresh';
const CHANNEL_NAME = 'jwt-refresh-token:session';
// How long a tab that waited for another tab's refresh waits for that tab's broadcast after the
// lock is released (it is posted before the release, so it is normally already there).
const HANDOFF_MS = 1000;
// 503 / 429 retries of one refresh, each after the server's Retry-After (capped).
const MAX_RETRIES = 3;
const MAX_RETRY_AFTER_MS = 10_000;
// The second step of a login with a code (the service's mfa-otp grant).
const MFA_OTP_GRANT = 'urn:ietf:params:oauth:grant-type:mfa-otp';

/** An error answer of the token service or of the API (OAuth-style JSON body when there is one). */
export class ApiError extends Error {
  constructor(status, body, headers) {
    const code = body && typeof body.error === 'string' ? body.error : `http_${status}`;
    super(body && body.error_description ? `${code}: ${body.error_description}` : code);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = headers ? headers.get('Retry-After') : null;
  }
}

/** The session is over (logged out here or in another tab, revoked, expired, or never started). */
export class LoggedOutError extends Error {
  constructor(reason) {
    super(`not logged in (${reason})`);
    this.name = 'LoggedOutError';
    this.reason = reason;
  }
}

/** The password was right; a second factor must follow (`mfaToken`, the `factors` the user has). */
export class MfaRequiredError extends ApiError {
  constructor(status, body, headers) {
    super(status, body, headers);
    this.name = 'MfaRequiredError';
    this.mfaToken = body.mfa_token;
    this.factors = Array.isArray(body.factors) ? body.factors : [];
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- DPoP (RFC 9449) ----------------------------------------------------------------------------

const KEY_DB = 'jwt-refresh-token';
const KEY_STORE = 'dpop';
const KEY_NAME = 'key';

function b64url(bytes) {
  let text = '';
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const utf8 = (text) => new TextEncoder().encode(text);

/** Runs `work(store)` in a transaction of the key database; resolves to the request's result. */
function keyDb(mode, work) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(KEY_DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(KEY_STORE);
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      const request = work(db.transaction(KEY_STORE, mode).objectStore(KEY_STORE));
      request.onsuccess = () => { db.close(); resolve(request.result); };
      request.onerror = () => { db.close(); reject(request.error); };
    };
  });
}

let keyPair = null;

/** This browser's DPoP key pair: loaded from IndexedDB, or generated (non-extractable) and stored. */
export function dpopKeyPair() {
  keyPair ||= (async () => {
    const stored = await keyDb('readonly', (store) => store.get(KEY_NAME));
    if (stored) return stored;
    const fresh = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
    // `add`, not `put`: when two tabs race, the loser reads the winner's key.
    await keyDb('readwrite', (store) => store.add(fresh, KEY_NAME)).catch(() => null);
    return keyDb('readonly', (store) => store.get(KEY_NAME));
  })();
  return keyPair;
}

/** A DPoP proof for `method url` (ES256, the public JWK in the header), with `ath` and `nonce` when given. */
async function signProof(method, url, accessToken, nonce) {
  const { privateKey, publicKey } = await dpopKeyPair();
  const { kty, crv, x, y } = await crypto.subtle.exportKey('jwk', publicKey); // the public half only
  const header = { typ: 'dpop+jwt', alg: 'ES256', jwk: { kty, crv, x, y } };
  const claims = { jti: crypto.randomUUID(), htm: method, htu: url, iat: Math.floor(Date.now() / 1000) };
  if (accessToken) claims.ath = b64url(await crypto.subtle.digest('SHA-256', utf8(accessToken)));
  if (nonce) claims.nonce = nonce;
  const input = `${b64url(utf8(JSON.stringify(header)))}.${b64url(utf8(JSON.stringify(claims)))}`;
  // WebCrypto's ECDSA signature is r || s, exactly the JWS ES256 format.
  const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, privateKey, utf8(input));
  return `${input}.${b64url(signature)}`;
}

function readCookie(name) {
  for (const part of document.cookie.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return decodeURIComponent(part.slice(eq + 1).trim());
  }
  return null;
}

/** The claims of a JWT, decoded without verification: for display only (the API verifies). */
export function decodeClaims(jwt) {
  try {
    const payload = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

async function readJson(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// ---- WebAuthn's JSON form (binary members base64url) ---------------------------------------------
// PublicKeyCredential.parseCreationOptionsFromJSON() and credential.toJSON() do the same in recent
// browsers; by hand it works everywhere navigator.credentials does.

function fromB64url(text) {
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
}

const withIds = (list) => (list ?? []).map((c) => ({ ...c, id: fromB64url(c.id) }));

/** `PublicKeyCredentialCreationOptions` from the service's JSON (`options.publicKey`). */
function creationOptions(json) {
  return {
    ...json,
    challenge: fromB64url(json.challenge),
    user: { ...json.user, id: fromB64url(json.user.id) },
    excludeCredentials: withIds(json.excludeCredentials),
  };
}

/** `PublicKeyCredentialRequestOptions` from the service's JSON (`options.publicKey`). */
function requestOptions(json) {
  return { ...json, challenge: fromB64url(json.challenge), allowCredentials: withIds(json.allowCredentials) };
}

/** Extension outputs with their binary members base64url. */
function jsonSafe(value) {
  if (value instanceof ArrayBuffer) return b64url(value);
  if (ArrayBuffer.isView(value)) return b64url(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
  if (Array.isArray(value)) return value.map(jsonSafe);
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, jsonSafe(v)]));
  return value;
}

/** A `PublicKeyCredential` (an attestation or an assertion) in WebAuthn's JSON form. */
export function credentialJson(credential) {
  const r = credential.response;
  const response = { clientDataJSON: b64url(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = b64url(r.attestationObject);
    if (typeof r.getTransports === 'function') response.transports = r.getTransports();
  } else {
    response.authenticatorData = b64url(r.authenticatorData);
    response.signature = b64url(r.signature);
    response.userHandle = r.userHandle ? b64url(r.userHandle) : null;
  }
  return {
    id: credential.id,
    rawId: b64url(credential.rawId),
    type: credential.type,
    response,
    extensions: jsonSafe(credential.getClientExtensionResults()),
  };
}

/** Asks the browser (and the person) for a passkey assertion for the service's request options. */
export async function getAssertion(options) {
  const credential = await navigator.credentials.get({ publicKey: requestOptions(options.publicKey) });
  if (!credential) throw new Error('no passkey was chosen');
  return credentialJson(credential);
}

export class TokenClient extends EventTarget {
  #authUrl;
  #serviceBase; // the public base URL of the token service's routes, from its Issuer (for `htu`)
  #nonce = null; // the latest DPoP-Nonce the token service sent
  #autoRefresh;
  #access = null; // { token, expiresAt, lifetimeMs, sessionExpiresAt, claims }
  #xsrf = null;
  #timer = null;
  #inflight = null;
  #channel = null;
  #waiters = new Set();
  #loggedOutReason = 'not logged in yet';

  /**
   * @param {object} options
   * @param {string} options.authUrl   base URL of the token service, e.g. https://auth.example.com
   * @param {string} [options.issuer]  the service's Issuer (its public base URL, which DPoP proofs
   *   name: `{issuer}/token`; an Issuer without a path stands for `{issuer}/api`); default authUrl
   * @param {boolean} [options.autoRefresh=true]  refresh silently shortly before the access token expires
   */
  constructor({ authUrl, issuer, autoRefresh = true }) {
    super();
    this.#authUrl = authUrl.replace(/\/+$/, '');
    const iss = (issuer || this.#authUrl).replace(/\/+$/, '');
    this.#serviceBase = new URL(iss).pathname.length > 1 ? iss : `${iss}/api`;
    this.#autoRefresh = autoRefresh;
    this.#xsrf = readCookie(XSRF_COOKIE) || localStorage.getItem(XSRF_STORAGE_KEY);
    if (typeof BroadcastChannel === 'function') {
      this.#channel = new BroadcastChannel(CHANNEL_NAME);
      this.#channel.onmessage = (event) => this.#onBroadcast(event.data);
    }
  }

  get authUrl() {
    return this.#authUrl;
  }

  /** The current access token (memory only), or null. */
  get accessToken() {
    return this.#access ? this.#access.token : null;
  }

  /** Claims of the current access token (unverified, for display), or null. */
  get claims() {
    return this.#access ? this.#access.claims : null;
  }

  /** When the current access token expires (ms since the epoch, this machine's clock), or null. */
  get expiresAt() {
    return this.#access ? this.#access.expiresAt : null;
  }

  /** When the session ends at the latest (absolute lifetime), or null. */
  get sessionExpiresAt() {
    return this.#access ? this.#access.sessionExpiresAt : null;
  }

  get loggedIn() {
    return this.#access !== null;
  }

  /** `DPoP` when the tokens are bound to this browser's key, `Bearer` otherwise, or null. */
  get tokenType() {
    return this.#access ? this.#access.tokenType : null;
  }

  /**
   * A DPoP proof for a request to `url` (an absolute URL, or a token-service route such as
   * `refresh`): for the token service, `htu` is its public URL under the Issuer; for any other API,
   * the URL itself without query and fragment.
   */
  dpopProof(method, url, accessToken = null) {
    return signProof(method, this.#htu(url), accessToken, this.#nonce);
  }

  #htu(url) {
    const service = `${this.#authUrl}/api/`;
    if (!url.includes('://')) return `${this.#serviceBase}/${url}`;
    if (url.startsWith(service)) return `${this.#serviceBase}/${url.slice(service.length).split(/[?#]/)[0]}`;
    const target = new URL(url, location.href);
    return `${target.origin}${target.pathname}`;
  }

  /** fetch() to the token service with a fresh proof; once more with the nonce on use_dpop_nonce. */
  async #withProof(url, init, accessToken = null) {
    for (let attempt = 0; ; attempt++) {
      const headers = new Headers(init.headers);
      headers.set('DPoP', await this.dpopProof(init.method ?? 'GET', url, accessToken));
      const response = await fetch(url, { ...init, headers });
      const nonce = response.headers.get('DPoP-Nonce');
      if (nonce) this.#nonce = nonce;
      if (attempt > 0 || !nonce || response.ok) return response;
      const error = response.status === 400
        ? (await readJson(response.clone()))?.error
        : /error="use_dpop_nonce"/.test(response.headers.get('WWW-Authenticate') ?? '') && 'use_dpop_nonce';
      if (error !== 'use_dpop_nonce') return response;
      this.#log('the token service asked for a DPoP nonce: retrying with it');
    }
  }

  /**
   * Log in with cookie transport: the refresh token goes into the HttpOnly cookie. A user with a
   * second factor gets MfaRequiredError: finish with loginWithCode() or loginWithPasskey().
   */
  login(username, password) {
    return this.#signIn('token', { username, password });
  }

  /**
   * The second step of a login that answered mfa_required: a code of the authenticator app (six
   * digits) or a recovery code. A wrong code can be corrected with the same `mfaToken`.
   */
  loginWithCode(mfaToken, code) {
    const typed = code.trim();
    const factor = /^\d{6}$/.test(typed) ? { otp: typed } : { recovery_code: typed };
    return this.#signIn('token', { grant_type: MFA_OTP_GRANT, mfa_token: mfaToken, ...factor });
  }

  /**
   * Sign in with a passkey: with no `mfaToken`, without a password (any passkey this browser
   * holds for the service); with one, as the second factor of the password login it came from.
   */
  async loginWithPasskey(mfaToken = null) {
    const start = await this.#postJson(`${this.#authUrl}/api/passkeys/login/start`, mfaToken ? { mfa_token: mfaToken } : {});
    const credential = await getAssertion(start.options);
    const body = { ceremony: start.ceremony, credential };
    if (mfaToken) body.mfa_token = mfaToken;
    return this.#signIn('passkeys/login/finish', body);
  }

  // ---- second factors and passkeys of the signed-in user (access token) ----------------------

  /** `{totp, totp_pending, recovery_codes_left}` of the signed-in user. */
  factors() {
    return this.#serviceCall('GET', 'mfa');
  }

  /** Starts adding an authenticator app: `{secret, otpauth_uri, qr_svg}` (pending until confirmed). */
  enrolTotp() {
    return this.#serviceCall('POST', 'mfa/totp');
  }

  /** Confirms the pending authenticator with one of its codes: logins need it from now on. Resolves to the recovery codes (shown once). */
  async confirmTotp(code) {
    return (await this.#serviceCall('POST', 'mfa/totp/verify', { code })).recovery_codes;
  }

  /** Removes the authenticator app, with a current code or a recovery code. */
  removeTotp(code) {
    return this.#serviceCall('DELETE', 'mfa/totp', { code });
  }

  /** The signed-in user's passkeys. */
  async passkeys() {
    return (await this.#serviceCall('GET', 'passkeys')).passkeys;
  }

  /**
   * Creates a passkey on this device (the browser asks the person) and registers it:
   * `{passkey, recovery_codes?}` (recovery codes when it is the account's first second factor).
   */
  async registerPasskey(name = '') {
    const start = await this.#serviceCall('POST', 'passkeys/register/start', {});
    const created = await navigator.credentials.create({ publicKey: creationOptions(start.options.publicKey) });
    if (!created) throw new Error('no passkey was created');
    const body = { ceremony: start.ceremony, credential: credentialJson(created) };
    if (name.trim()) body.name = name.trim();
    return this.#serviceCall('POST', 'passkeys/register/finish', body);
  }

  /** Removes one of the signed-in user's passkeys (its `id`). */
  removePasskey(id) {
    return this.#serviceCall('DELETE', `passkeys/${encodeURIComponent(id)}`);
  }

  /**
   * On page load: resume the session from the cookie, if there is one. Resolves to true when a
   * session was resumed, false when there is none (the page shows the login form).
   */
  async resume() {
    try {
      await this.refresh(null);
      return true;
    } catch (error) {
      if (error instanceof LoggedOutError) return false;
      throw error;
    }
  }

  /**
   * A token newer than `stale` (default: the current one). Single-flight within the tab and, with
   * the Web Locks API, across this origin's tabs: when another tab is refreshing, this waits for
   * its result instead of rotating again.
   */
  refresh(stale = this.accessToken) {
    if (!this.#inflight) {
      this.#inflight = this.#coordinatedRefresh(stale).finally(() => {
        this.#inflight = null;
      });
    }
    return this.#inflight;
  }

  /**
   * fetch() with the access token. Refreshes first when the token is about to expire, and once
   * more (then retries once) when the API answers 401 with `Token-Expired: true`.
   */
  async fetch(url, init = {}) {
    let token = await this.#validToken();
    let response = await this.#bearerFetch(url, init, token);
    if (response.status === 401 && response.headers.get('Token-Expired') === 'true') {
      this.#log('API answered 401 Token-Expired: refreshing and retrying once');
      await response.body?.cancel();
      token = await this.refresh(token);
      response = await this.#bearerFetch(url, init, token);
    }
    return response;
  }

  /** Log out this browser: ends the cookie's session and clears both cookies. */
  async logout() {
    try {
      const response = await this.#cookieRevoke();
      const body = await readJson(response);
      if (!response.ok) throw new ApiError(response.status, body, response.headers);
    } finally {
      this.#end('logged out');
      this.#broadcast({ type: 'logged-out', reason: 'logged out in another tab' });
    }
  }

  /** Log out everywhere: ends every session of this user (Bearer, scope=global), then clears the cookies. */
  async logoutEverywhere() {
    const response = await this.fetch(`${this.#authUrl}/api/revoke`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ scope: 'global' }),
    });
    const body = await readJson(response);
    if (!response.ok) throw new ApiError(response.status, body, response.headers);
    // The session behind the cookie has ended with the others; this revoke only clears the cookies.
    const clear = await this.#cookieRevoke().catch((error) => error);
    if (clear instanceof Response) await clear.text();
    if (!(clear instanceof Response) || !clear.ok) this.#log('the cookies could not be cleared; they no longer work');
    this.#end('logged out everywhere');
    this.#broadcast({ type: 'logged-out', reason: 'logged out everywhere in another tab' });
  }

  // ---- internals -------------------------------------------------------------------------

  /** A token request that starts a session (login, second step, passkey): cookie transport, DPoP. */
  async #signIn(route, body) {
    const response = await this.#withProof(`${this.#authUrl}/api/${route}`, {
      method: 'POST',
      credentials: 'include',
      cache: 'no-store',
      headers: { 'Content-Type': 'application/json', 'X-Token-Transport': 'cookie' },
      body: JSON.stringify(body),
    });
    const answer = await readJson(response);
    if (response.status === 401 && answer?.error === 'mfa_required') {
      this.#log(`the password was right; a second factor is required (${answer.factors?.join(', ')})`);
      throw new MfaRequiredError(response.status, answer, response.headers);
    }
    if (!response.ok) throw new ApiError(response.status, answer, response.headers);
    this.#accept(answer, response.headers.get('X-XSRF-TOKEN'));
    this.#broadcast({ type: 'token', ...this.#shareable() });
    this.#log(`logged in as ${this.#access.claims.name ?? this.#access.claims.sub} (${(this.#access.claims.amr ?? []).join(', ')})`);
    return this.#access.token;
  }

  /** A JSON POST to the token service without credentials (a passkey ceremony's start). */
  async #postJson(url, body) {
    const response = await fetch(url, {
      method: 'POST',
      cache: 'no-store',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const answer = await readJson(response);
    if (!response.ok) throw new ApiError(response.status, answer, response.headers);
    return answer;
  }

  /** A call to a token-service route with the access token (refreshed when needed); its JSON answer. */
  async #serviceCall(method, route, body) {
    const init = { method };
    if (body !== undefined) {
      init.headers = { 'Content-Type': 'application/json' };
      init.body = JSON.stringify(body);
    }
    const response = await this.fetch(`${this.#authUrl}/api/${route}`, init);
    const answer = await readJson(response);
    if (!response.ok) throw new ApiError(response.status, answer, response.headers);
    return answer;
  }

  async #validToken() {
    if (!this.#access) throw new LoggedOutError(this.#loggedOutReason);
    if (this.#access.expiresAt - Date.now() <= this.#marginMs()) return this.refresh(this.#access.token);
    return this.#access.token;
  }

  /** The access token on `url`: `Authorization: DPoP` with a proof (ath) for a bound token, else Bearer. */
  async #bearerFetch(url, init, token) {
    const headers = new Headers(init.headers);
    if (this.#access?.tokenType !== 'DPoP') {
      headers.set('Authorization', `Bearer ${token}`);
      return fetch(url, { ...init, headers, cache: 'no-store' });
    }
    headers.set('Authorization', `DPoP ${token}`);
    const absolute = new URL(url, location.href).href;
    return this.#withProof(absolute, { ...init, headers, cache: 'no-store' }, token);
  }

  #cookieRevoke() {
    return fetch(`${this.#authUrl}/api/revoke`, {
      method: 'POST',
      credentials: 'include',
      cache: 'no-store',
      headers: this.#xsrf ? { 'X-XSRF-TOKEN': this.#xsrf } : {},
    });
  }

  /** A token other than `stale` that has not expired: another tab (or this one) already refreshed. */
  #fresherThan(stale) {
    return this.#access !== null && this.#access.token !== stale && this.#access.expiresAt > Date.now();
  }

  async #coordinatedRefresh(stale) {
    if (!navigator.locks) return this.#refreshNow(stale);
    const busy = Symbol('busy');
    // Is another tab refreshing right now? Then its outcome is broadcast before it lets go.
    const first = await navigator.locks.request(LOCK_NAME, { ifAvailable: true }, (lock) =>
      lock ? this.#refreshNow(stale) : busy,
    );
    if (first !== busy) return first;
    const outcome = this.#nextBroadcast();
    this.#log('another tab is refreshing: waiting for it');
    return navigator.locks.request(LOCK_NAME, async () => {
      if (!this.#fresherThan(stale)) await Promise.race([outcome, sleep(HANDOFF_MS)]);
      return this.#refreshNow(stale);
    });
  }

  /** Refresh through the cookie unless a fresher token is already here; broadcasts the outcome. */
  async #refreshNow(stale) {
    if (this.#fresherThan(stale)) return this.#access.token;
    if (stale !== null && this.#access === null) throw new LoggedOutError(this.#loggedOutReason);
    let outcome = { type: 'refresh-failed' };
    try {
      const token = await this.#cookieRefresh();
      outcome = { type: 'token', ...this.#shareable() };
      return token;
    } catch (error) {
      if (error instanceof LoggedOutError) outcome = { type: 'logged-out', reason: error.reason };
      throw error;
    } finally {
      this.#broadcast(outcome);
    }
  }

  async #cookieRefresh() {
    for (let attempt = 0; ; attempt++) {
      const response = await this.#withProof(`${this.#authUrl}/api/refresh`, {
        method: 'POST',
        credentials: 'include',
        cache: 'no-store',
        headers: this.#xsrf ? { 'X-XSRF-TOKEN': this.#xsrf } : {},
      });
      const body = await readJson(response);
      if (response.ok) {
        this.#accept(body, response.headers.get('X-XSRF-TOKEN'));
        this.#log('refreshed');
        return this.#access.token;
      }
      const retryAfter = Number(response.headers.get('Retry-After'));
      if ((response.status === 503 || response.status === 429) && attempt < MAX_RETRIES) {
        // Nothing rotated: the cookie still holds the same refresh token, and if the service did
        // rotate before failing, the reuse grace answers the same successor.
        const wait = Math.min(MAX_RETRY_AFTER_MS, Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : 1000);
        this.#log(`refresh answered ${response.status}: retrying in ${wait} ms`);
        await sleep(wait);
        continue;
      }
      if (response.status >= 500 || response.status === 429) throw new ApiError(response.status, body, response.headers);
      // 400 invalid_grant / invalid_request (no cookie), 401, 403: this session cannot go on.
      const error = new ApiError(response.status, body, response.headers);
      this.#end(error.message);
      throw new LoggedOutError(error.message);
    }
  }

  #accept(body, xsrfHeader) {
    if (!body || typeof body.access_token !== 'string' || typeof body.expires_in !== 'number') {
      throw new Error('the token service answered without an access token');
    }
    if (xsrfHeader) this.#setXsrf(xsrfHeader);
    const now = Date.now();
    this.#access = {
      token: body.access_token,
      tokenType: body.token_type,
      lifetimeMs: body.expires_in * 1000,
      expiresAt: now + body.expires_in * 1000,
      sessionExpiresAt: typeof body.refresh_expires_in === 'number' ? now + body.refresh_expires_in * 1000 : null,
      claims: decodeClaims(body.access_token),
    };
    this.#schedule();
    this.#changed();
  }

  #shareable() {
    const { token, tokenType, lifetimeMs, expiresAt, sessionExpiresAt } = this.#access;
    return { token, tokenType, lifetimeMs, expiresAt, sessionExpiresAt, xsrf: this.#xsrf };
  }

  #setXsrf(value) {
    this.#xsrf = value;
    // Keep a copy only where the cookie is not readable from this page (service on another host).
    if (readCookie(XSRF_COOKIE) === value) localStorage.removeItem(XSRF_STORAGE_KEY);
    else localStorage.setItem(XSRF_STORAGE_KEY, value);
  }

  #end(reason) {
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#access = null;
    this.#xsrf = null;
    this.#loggedOutReason = reason;
    localStorage.removeItem(XSRF_STORAGE_KEY);
    this.#changed();
  }

  #marginMs() {
    // Refresh when 30% of the lifetime is left, at least 1 s and at most 60 s before expiry.
    const lifetime = this.#access ? this.#access.lifetimeMs : 300_000;
    return Math.min(60_000, Math.max(1000, lifetime * 0.3));
  }

  #schedule() {
    clearTimeout(this.#timer);
    this.#timer = null;
    if (!this.#autoRefresh || !this.#access) return;
    const token = this.#access.token;
    const delay = Math.max(0, this.#access.expiresAt - this.#marginMs() - Date.now());
    this.#timer = setTimeout(() => {
      this.#log('access token about to expire: refreshing silently');
      this.refresh(token).catch((error) => this.#log(`silent refresh failed: ${error.message}`));
    }, delay);
  }

  #broadcast(message) {
    if (this.#channel) this.#channel.postMessage(message);
  }

  #nextBroadcast() {
    return new Promise((resolve) => this.#waiters.add(resolve));
  }

  #onBroadcast(message) {
    if (message.type === 'token') {
      this.#xsrf = message.xsrf ?? this.#xsrf;
      this.#access = {
        token: message.token,
        tokenType: message.tokenType,
        lifetimeMs: message.lifetimeMs,
        expiresAt: message.expiresAt,
        sessionExpiresAt: message.sessionExpiresAt,
        claims: decodeClaims(message.token),
      };
      this.#schedule();
      this.#changed();
      this.#log('received a new access token from another tab');
    } else if (message.type === 'logged-out') {
      this.#end(message.reason);
      this.#log(message.reason);
    }
    for (const resolve of this.#waiters) resolve(message);
    this.#waiters.clear();
  }

  #changed() {
    this.dispatchEvent(new Event('change'));
  }

  #log(text) {
    this.dispatchEvent(new CustomEvent('log', { detail: text }));
  }
}
