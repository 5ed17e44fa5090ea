// A local OpenID Connect provider for make dev and make test: panva's
// oidc-provider (OpenID-certified), as a real provider behaves, on
// http://127.0.0.1:$IDP_PORT (or $IDP_ISSUER). Its development login form
// takes any login (the password is ignored); the account is that login:
//   sub    the login
//   name   the login, as typed
//   email  <login>@idp.localhost, verified, unless the login starts with
//          "unverified-" (then email_verified is false)
// Clients come from $IDP_CLIENTS, a JSON array of {client_id,
// client_secret, redirect_uris}: confidential (client_secret_basic), the
// code flow only, PKCE (S256) required. ID tokens are RS256, signed by a
// key made at start (each instance, and each restart, has its own), and carry the email and
// profile claims the scopes grant. The authorization response carries
// `iss` (RFC 9207). Node 20 prints a version warning: harmless here.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.IDP_PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('idp: set IDP_PORT');
  process.exit(2);
}
const issuer = process.env.IDP_ISSUER ?? `http://127.0.0.1:${port}`;
const clients = JSON.parse(process.env.IDP_CLIENTS ?? '[]').map((client) => ({
  client_id: client.client_id,
  client_secret: client.client_secret,
  redirect_uris: client.redirect_uris,
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'RS256',
}));
if (clients.length === 0) {
  console.error('idp: set IDP_CLIENTS (a JSON array of {client_id, client_secret, redirect_uris})');
  process.exit(2);
}

function account(login) {
  return {
    sub: login,
    name: login,
    email: `${login.toLowerCase()}@idp.localhost`,
    email_verified: !login.startsWith('unverified-'),
  };
}

// A key of its own: two providers (mix-up tests) never share one.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }),
  use: 'sig',
  alg: 'RS256',
  kid: randomBytes(8).toString('base64url'),
};

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingKey] },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  // The scopes' claims in the ID token itself, as Google's and Entra's are.
  conformIdTokenClaims: false,
  findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => account(sub) }),
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  features: { devInteractions: { enabled: true } },
  renderError: async (ctx, out) => {
    ctx.type = 'json';
    ctx.body = out;
  },
});
// Plain HTTP on loopback: tell the provider its requests are not proxied.
provider.proxy = false;
provider.listen(port, '127.0.0.1', () => {
  console.log(`idp: ${issuer} (clients: ${clients.map((c) => c.client_id).join(', ')})`);
});
