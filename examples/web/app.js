// The example page: wires TokenClient (token-client.js) to the buttons.
//
// Configuration: window.WEB_EXAMPLE_CONFIG (written by serve.mjs as config.js), overridden by the
// query parameters ?auth=<token service base URL>, ?api=<protected API URL>, ?autorefresh=0.
import { ApiError, LoggedOutError, MfaRequiredError, TokenClient } from './token-client.js';

const params = new URLSearchParams(location.search);
const base = window.WEB_EXAMPLE_CONFIG || {};
const config = {
  authUrl: params.get('auth') || base.authUrl || 'http://localhost:7071',
  issuer: params.get('issuer') || base.issuer || undefined,
  apiUrl: params.get('api') || base.apiUrl || '/api/hello',
  autoRefresh: !['0', 'false', 'off'].includes(params.get('autorefresh') ?? String(base.autoRefresh ?? true)),
};

const client = new TokenClient({ authUrl: config.authUrl, issuer: config.issuer, autoRefresh: config.autoRefresh });
// For the browser test and the devtools console; the access token stays in this object's memory.
window.app = client;

const $ = (id) => document.getElementById(id);
$('auth-url').textContent = client.authUrl;

// A login whose password passed and that awaits its second step: { token, factors }. Memory only.
let pendingMfa = null;

function log(text) {
  const item = document.createElement('li');
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $('log').prepend(item);
  while ($('log').children.length > 50) $('log').lastChild.remove();
}

function describe(error) {
  if (error instanceof ApiError || error instanceof LoggedOutError) return error.message;
  if (error instanceof TypeError) return `network error (is the token service running and is this origin in its CORS list?): ${error.message}`;
  return String(error && error.message ? error.message : error);
}

function render() {
  const inside = client.loggedIn;
  if (inside) pendingMfa = null;
  $('login').hidden = inside || pendingMfa !== null;
  $('mfa').hidden = inside || pendingMfa === null;
  $('session').hidden = !inside;
  $('status').dataset.state = inside ? 'in' : pendingMfa ? 'mfa' : 'out';
  if (inside) {
    const claims = client.claims;
    $('status').textContent = `Logged in as ${claims.name ?? claims.sub}.`;
    $('user').textContent = `${claims.name ?? '?'} (sub ${claims.sub}, roles: ${(claims.roles || []).join(', ') || 'none'}, ` +
      `signed in with: ${(claims.amr || []).join(', ') || '?'})`;
    $('session-end').textContent = client.sessionExpiresAt ? new Date(client.sessionExpiresAt).toLocaleString() : '?';
  } else {
    $('status').textContent = pendingMfa ? 'Password accepted: confirm with a second factor.' : 'Not logged in.';
    $('api-result').textContent = '';
    resetSecurity();
  }
  if (pendingMfa) {
    const totp = pendingMfa.factors.includes('totp');
    $('mfa-label').textContent = totp ? 'Code from your authenticator app, or a recovery code' : 'A recovery code';
    $('mfa-passkey').hidden = !pendingMfa.factors.includes('webauthn');
  }
  tick();
}

function tick() {
  if (client.loggedIn) $('expires').textContent = `${Math.max(0, Math.round((client.expiresAt - Date.now()) / 1000))} s`;
}

/** Runs `work` with `button` disabled; an error goes to the log and to `output`. */
async function action(button, work, output = $('api-result')) {
  if (button) button.disabled = true;
  try {
    await work();
  } catch (error) {
    log(describe(error));
    output.textContent = describe(error);
  } finally {
    if (button) button.disabled = false;
  }
}

client.addEventListener('change', render);
client.addEventListener('log', (event) => log(event.detail));
setInterval(tick, 1000);

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  $('login-error').textContent = '';
  action($('login-button'), async () => {
    try {
      await client.login(form.get('username'), form.get('password'));
    } catch (error) {
      if (!(error instanceof MfaRequiredError)) throw error;
      pendingMfa = { token: error.mfaToken, factors: error.factors };
      $('mfa-error').textContent = '';
      render();
    }
    event.target.reset();
  }, $('login-error'));
});

// Passwordless: any passkey of this browser for the service (the browser asks which one).
$('passkey-login').addEventListener('click', () => {
  $('login-error').textContent = '';
  action($('passkey-login'), () => client.loginWithPasskey(), $('login-error'));
});

// The second step: a code (or a recovery code) with the same mfa_token until one is right.
$('mfa').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  $('mfa-error').textContent = '';
  action($('mfa-button'), async () => {
    await client.loginWithCode(pendingMfa.token, form.get('code'));
    event.target.reset();
  }, $('mfa-error'));
});

$('mfa-passkey').addEventListener('click', () => {
  $('mfa-error').textContent = '';
  action($('mfa-passkey'), () => client.loginWithPasskey(pendingMfa.token), $('mfa-error'));
});

$('mfa-cancel').addEventListener('click', () => {
  pendingMfa = null;
  $('mfa').reset();
  render();
});

$('call-api').addEventListener('click', () =>
  action($('call-api'), async () => {
    const response = await client.fetch(config.apiUrl);
    const text = await response.text();
    $('api-result').textContent = `${response.status} ${text}`;
    log(`API answered ${response.status}`);
  }),
);

$('refresh').addEventListener('click', () => action($('refresh'), () => client.refresh()));
$('logout').addEventListener('click', () => action($('logout'), () => client.logout()));
$('logout-everywhere').addEventListener('click', () => action($('logout-everywhere'), () => client.logoutEverywhere()));

// ---- second factors and passkeys (loaded when the section is opened) --------------------------

async function showFactors() {
  const [state, passkeys] = await Promise.all([client.factors(), client.passkeys()]);
  const totp = state.totp ? 'on' : state.totp_pending ? 'pending' : 'off';
  $('factors').textContent = `Authenticator app: ${totp}. Passkeys: ${passkeys.length}. ` +
    `Recovery codes left: ${state.recovery_codes_left}.`;
  Object.assign($('factors').dataset, { totp, passkeys: passkeys.length, recoveryCodes: state.recovery_codes_left });
  $('totp-start').hidden = state.totp;
  $('totp-remove').hidden = !state.totp;
  $('passkeys').replaceChildren(
    ...passkeys.map((passkey) => {
      const item = document.createElement('li');
      const used = passkey.last_used_at ? new Date(passkey.last_used_at * 1000).toLocaleString() : 'never';
      item.textContent = `${passkey.name} (added ${new Date(passkey.created_at * 1000).toLocaleDateString()}, last used ${used})`;
      const remove = document.createElement('button');
      remove.textContent = 'Remove';
      remove.addEventListener('click', () =>
        action(remove, async () => {
          await client.removePasskey(passkey.id);
          log(`passkey "${passkey.name}" removed`);
          await showFactors();
        }, $('security-result')),
      );
      item.append(remove);
      return item;
    }),
  );
}

function showRecoveryCodes(codes) {
  $('recovery-codes').replaceChildren(...codes.map((code) => Object.assign(document.createElement('li'), { textContent: code })));
  $('recovery').hidden = false;
}

/** Forgets what the section showed (on log out): the secret, the QR code, the recovery codes. */
function resetSecurity() {
  $('security').open = false;
  for (const id of ['totp-enrol', 'totp-remove', 'recovery']) $(id).hidden = true;
  $('totp-secret').textContent = '';
  $('totp-qr').removeAttribute('src');
  for (const id of ['passkeys', 'recovery-codes']) $(id).replaceChildren();
  $('factors').textContent = '';
  for (const key of Object.keys($('factors').dataset)) delete $('factors').dataset[key];
  $('security-result').textContent = '';
}

$('security').addEventListener('toggle', () => {
  if ($('security').open && client.loggedIn) action(null, showFactors, $('security-result'));
});

$('totp-start').addEventListener('click', () =>
  action($('totp-start'), async () => {
    $('security-result').textContent = '';
    const enrolment = await client.enrolTotp();
    $('totp-secret').textContent = enrolment.secret;
    // The service's SVG as an image: shown, never run.
    $('totp-qr').src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(enrolment.qr_svg)}`;
    $('totp-enrol').hidden = false;
    $('totp-enrol').elements.code.focus();
    log('authenticator app pending: confirm it with a code');
  }, $('security-result')),
);

$('totp-enrol').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  $('security-result').textContent = '';
  action($('totp-confirm'), async () => {
    const codes = await client.confirmTotp(form.get('code'));
    event.target.reset();
    event.target.hidden = true;
    $('totp-secret').textContent = '';
    $('totp-qr').removeAttribute('src');
    showRecoveryCodes(codes);
    log('authenticator app confirmed: logins need a code from now on');
    await showFactors();
  }, $('security-result'));
});

$('totp-remove').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  $('security-result').textContent = '';
  action($('totp-remove-button'), async () => {
    await client.removeTotp(form.get('code'));
    event.target.reset();
    log('authenticator app removed');
    await showFactors();
  }, $('security-result'));
});

$('passkey-add').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  $('security-result').textContent = '';
  action($('passkey-register'), async () => {
    const { passkey, recovery_codes: codes } = await client.registerPasskey(form.get('name'));
    event.target.reset();
    log(`passkey "${passkey.name}" added`);
    if (codes) showRecoveryCodes(codes);
    await showFactors();
  }, $('security-result'));
});

// A reload (or a new tab) resumes the session through the HttpOnly cookie.
client
  .resume()
  .then((resumed) => log(resumed ? 'session resumed from the cookie' : 'no session to resume'))
  .catch((error) => log(`could not resume: ${describe(error)}`))
  .finally(() => {
    render();
    document.body.dataset.ready = 'true';
  });
