// A real OpenID Provider for signoff's tests: the OpenID-certified `oidc-provider` package.
//
//   node provider.mjs --port 0 [--issuer URL] [--ready-file PATH] [--web-redirect URL]
//
// With --web-redirect, it also knows `signoff-web`, the approval page's confidential client
// (authorization code flow, PKCE required) redirecting to that URL.
//
// Prints `listening <port>` on stdout once it serves. It offers the device authorization
// grant (people), client credentials (workloads), `email` and `groups` claims, and JWT access
// tokens for the resource indicator https://signoff.test (RS256, keys in its JWKS).
//
// Test-only endpoints (never in a real IdP):
//   POST /__test/rotate  a new RS256 signing key; the JWKS then lists the new and the old key
//   POST /__test/drop    the JWKS lists only the current signing key (the old one is retired)
//   GET  /__test/stats   how often discovery and the JWKS were fetched
//   POST /__test/reset   zero those counters
import { createServer } from 'node:http';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);

export const AUDIENCE = 'https://signoff.test';
// Anything else a test asks for is another resource server: its tokens have its audience.
const RESOURCE_SCOPE = 'signoff';

// People the provider knows; the device flow's login form signs in as any of them by id.
const ACCOUNTS = {
  'alice@example.com': { email: 'alice@example.com', groups: ['platform-oncall', 'dba-team'] },
  'bob@example.com': { email: 'bob@example.com', groups: ['Platform On-Call', 'everyone'] },
  'nobody@example.com': { email: 'nobody@example.com', groups: [] },
  // Not in signoff's test directory: a person known only to the IdP.
  'zoe@example.com': {
    email: 'zoe@example.com',
    groups: ['dba-team', 'Platform On-Call', 'security', 'not-a-signoff-group'],
  },
  // The owner of the test directory's agent:bot (the approval page's self-approval test).
  'dave@example.com': { email: 'dave@example.com', groups: ['security', 'dba-team'] },
  // A person whose IdP email is an agent's principal id.
  mallory: { email: 'agent:bot', groups: ['dba-team'] },
};

const CLIENTS = [
  {
    // The CLI: a public client that signs people in with the device flow.
    client_id: 'signoff-cli',
    client_name: 'signoff CLI',
    token_endpoint_auth_method: 'none',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
    response_types: [],
    redirect_uris: [],
  },
  {
    // The CLI at an IdP that wants PKCE on the device grant too (see devicePkce below).
    client_id: 'signoff-cli-pkce',
    client_name: 'signoff CLI (PKCE)',
    token_endpoint_auth_method: 'none',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
    response_types: [],
    redirect_uris: [],
  },
  // Workloads: client credentials, like an Okta service app or an Entra app registration.
  ...['etl-bot', 'unmapped-bot', 'short-lived-bot'].map((id) => ({
    client_id: id,
    client_secret: `${id}-secret`,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  })),
];

if (args['web-redirect']) {
  // The gateway's approval page: a web app signing people in with the code flow and PKCE.
  CLIENTS.push({
    client_id: 'signoff-web',
    client_secret: 'signoff-web-secret',
    client_name: 'signoff approval page',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [args['web-redirect']],
    token_endpoint_auth_method: 'client_secret_basic',
  });
}

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

let keys = [newKey()];
const stats = { discovery: 0, jwks: 0 };

// PKCE on the device grant. oidc-provider lists S256 in discovery but applies PKCE to the
// authorization endpoint only (it drops code_challenge from device requests), while some IdPs
// accept it on the device grant as well. This middleware makes the harness one of those: a
// device request may carry an S256 code_challenge (signoff-cli-pkce must), and then the token
// request that would hand out the tokens must carry the matching code_verifier.
const deviceChallenges = new Map(); // device_code -> code_challenge
const PKCE_CLIENTS = new Set(['signoff-cli-pkce']);

async function devicePkce(ctx, next) {
  await next();
  const route = ctx.oidc?.route;
  const body = ctx.oidc?.body ?? {};
  if (route === 'device_authorization' && ctx.status === 200) {
    if (body.code_challenge && body.code_challenge_method === 'S256') {
      deviceChallenges.set(ctx.body.device_code, body.code_challenge);
    } else if (body.code_challenge || PKCE_CLIENTS.has(body.client_id)) {
      ctx.status = 400;
      ctx.body = {
        error: 'invalid_request',
        error_description: 'code_challenge with code_challenge_method S256 is required',
      };
    }
  }
  const deviceGrant = body.grant_type === 'urn:ietf:params:oauth:grant-type:device_code';
  if (route === 'token' && deviceGrant && ctx.status === 200) {
    const challenge = deviceChallenges.get(body.device_code);
    if (challenge !== undefined) {
      deviceChallenges.delete(body.device_code);
      const verifier = typeof body.code_verifier === 'string' ? body.code_verifier : '';
      if (createHash('sha256').update(verifier).digest('base64url') !== challenge) {
        ctx.status = 400;
        ctx.body = { error: 'invalid_grant', error_description: 'PKCE verification failed' };
      }
    }
  }
}

function build(issuer) {
  const provider = new Provider(issuer, {
    clients: CLIENTS,
    jwks: { keys },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'groups', RESOURCE_SCOPE],
    async findAccount(ctx, id) {
      const account = ACCOUNTS[id];
      if (!account) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: account.email, email_verified: true, groups: account.groups };
        },
      };
    },
    // Access tokens carry who and which groups, like Okta's and Entra's do when configured.
    async extraTokenClaims(ctx, token) {
      const account = token.accountId ? ACCOUNTS[token.accountId] : undefined;
      return account ? { email: account.email, groups: account.groups } : undefined;
    },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => ({
          scope: RESOURCE_SCOPE,
          audience: resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: ctx.oidc.client?.clientId === 'short-lived-bot' ? 1 : 600,
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    ttl: {
      DeviceCode: 600,
      AccessToken: 600,
      ClientCredentials: (ctx, token, client) => (client.clientId === 'short-lived-bot' ? 1 : 600),
      Grant: 3600,
      IdToken: 600,
      Interaction: 600,
      RefreshToken: 3600,
      Session: 3600,
    },
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    // PKCE is required of the approval page's client, so its tests prove the gateway sends it.
    pkce: { required: (ctx, client) => client.clientId === 'signoff-web' },
    renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  provider.use(devicePkce);
  return provider;
}

const port = Number(args.port ?? 0);
let issuer = args.issuer;
let provider;
let handler;

function rebuild() {
  provider = build(issuer);
  handler = provider.callback();
}

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/__test/rotate' && req.method === 'POST') {
    keys = [newKey(), keys[0]];
    rebuild();
    return json(res, 200, { kids: keys.map((k) => k.kid) });
  }
  if (path === '/__test/drop' && req.method === 'POST') {
    keys = [keys[0]];
    rebuild();
    return json(res, 200, { kids: keys.map((k) => k.kid) });
  }
  if (path === '/__test/stats') return json(res, 200, stats);
  if (path === '/__test/reset' && req.method === 'POST') {
    stats.discovery = 0;
    stats.jwks = 0;
    return json(res, 200, stats);
  }
  if (path === '/.well-known/openid-configuration') stats.discovery += 1;
  if (path === '/jwks') stats.jwks += 1;
  return handler(req, res);
});

server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  issuer = issuer ?? `http://127.0.0.1:${actual}`;
  rebuild();
  process.stdout.write(`listening ${actual}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
