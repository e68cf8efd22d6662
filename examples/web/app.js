// The example page: wires TokenClient (token-client.js) to the buttons.
//
// Configuration: window.WEB_EXAMPLE_CONFIG (written by serve.mjs as config.js), overridden by the
// query parameters ?auth=<token service base URL>, ?api=<protected API URL>, ?autorefresh=0.
import { ApiError, LoggedOutError, TokenClient } from './token-client.js';

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
  $('login').hidden = inside;
  $('session').hidden = !inside;
  $('status').dataset.state = inside ? 'in' : 'out';
  if (inside) {
    const claims = client.claims;
    $('status').textContent = `Logged in as ${claims.name ?? claims.sub}.`;
    $('user').textContent = `${claims.name ?? '?'} (sub ${claims.sub}, roles: ${(claims.roles || []).join(', ') || 'none'})`;
    $('session-end').textContent = client.sessionExpiresAt ? new Date(client.sessionExpiresAt).toLocaleString() : '?';
  } else {
    $('status').textContent = 'Not logged in.';
    $('api-result').textContent = '';
  }
  tick();
}

function tick() {
  if (client.loggedIn) $('expires').textContent = `${Math.max(0, Math.round((client.expiresAt - Date.now()) / 1000))} s`;
}

async function action(button, work) {
  button.disabled = true;
  try {
    await work();
  } catch (error) {
    log(describe(error));
    $('api-result').textContent = describe(error);
  } finally {
    button.disabled = false;
  }
}

client.addEventListener('change', render);
client.addEventListener('log', (event) => log(event.detail));
setInterval(tick, 1000);

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  action($('login-button'), async () => {
    await client.login(form.get('username'), form.get('password'));
    event.target.reset();
  });
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

// A reload (or a new tab) resumes the session through the HttpOnly cookie.
client
  .resume()
  .then((resumed) => log(resumed ? 'session resumed from the cookie' : 'no session to resume'))
  .catch((error) => log(`could not resume: ${describe(error)}`))
  .finally(() => {
    render();
    document.body.dataset.ready = 'true';
  });
