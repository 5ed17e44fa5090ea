// The browser side of a session, for pages served at the API's own origin (or
// an origin in CorsAllowedOrigins). What it promises:
// - the access token lives in this module's memory only: never in web
//   storage, document.cookie or a URL; the refresh token is in the API's
//   HttpOnly `__Host-refresh_token` cookie, which no script can read;
// - the session survives a reload (a refresh through the cookie) and is
//   refreshed ahead of expiry;
// - one refresh in flight across every tab of this origin (Web Locks): each
//   refresh rotates the cookie, so two at once would race;
// - signing out in one tab signs out every tab (BroadcastChannel);
// - an API call is retried once, after a refresh, only when it failed because
//   of the access token (`invalid_token`), never after `login_failed`.
// The UI calls this module and never handles a token itself.

/** An error answer of the API: its status, stable code and message. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  /** Seconds, from `Retry-After` (429 and 503). */
  readonly retryAfter: number | null;

  constructor(status: number, code: string, message: string, retryAfter: number | null = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /** What to show a person: the API's message, with the wait when it gave one. */
  get userMessage(): string {
    if (this.retryAfter === null) return this.message;
    return `${this.message} (wait ${formatWait(this.retryAfter)})`;
  }
}

export type AuthState =
  /** Asking the API whether the cookie holds a session; `problem` while it cannot tell. */
  | { status: "loading"; problem: string | null }
  | { status: "signed-out"; notice: string | null }
  /** `user` is the token's subject: a change of user is a new signed-in state. */
  | { status: "signed-in"; user: string };

export interface AuthOptions {
  /**
   * Where the API is (an origin, and a path prefix if any; relative to the
   * page is fine); the page's own origin by default. It must be on the
   * page's site: the cookie is SameSite=Strict, so a browser never sends it
   * from another site, and the API takes it only from its own origin or one
   * of its CorsAllowedOrigins.
   */
  baseUrl?: string;
  /** Names the Web Lock and the BroadcastChannel shared by the tabs. */
  name?: string;
  /** Refresh this long before the access token expires (seconds), at most half its lifetime. */
  refreshMarginSeconds?: number;
}

export interface CallOptions {
  method?: string;
  /** Sent as the JSON body, with `Content-Type: application/json`. */
  json?: unknown;
}

/** One of the user's sessions, as `GET /sessions` lists it (times in seconds). */
export interface SessionInfo {
  id: string;
  /** This tab's session. */
  current: boolean;
  method: "password" | "password_change" | "provider" | "passkey" | "other";
  created_at: number;
  last_used_at: number;
  expires_at: number;
  user_agent: string | null;
  ip: string | null;
  known_device: boolean;
}

interface TokenAnswer {
  access_token: string;
  expires_in: number;
}

/** The user's addresses, as `/account/email` answers them. */
export interface EmailView {
  /** The verified address: resets and notices go to it. */
  email: string | null;
  email_verified: boolean;
  /** An address given, waiting for its verification. */
  email_pending: string | null;
}

/** An outside identity provider to sign in with (`GET /oidc/providers`). */
export interface Provider {
  id: string;
  name: string;
}

/** The ways the signed-in account signs in (`GET /account/identities`). */
export interface Identities {
  has_password: boolean;
  /** A second factor is set up: every sign-in asks for it. */
  second_factor: boolean;
  identities: {
    /** The configured provider's id and name (null: no longer configured). */
    provider: string | null;
    name: string | null;
    issuer: string;
    connected_at: number | null;
  }[];
}

/** A passkey of the account, as its owner sees it. */
export interface PasskeyInfo {
  id: string;
  name: string;
  created_at: number;
  last_used: number | null;
  /** Synced to the owner's other devices (else bound to one device). */
  synced: boolean;
  backup_eligible: boolean;
}

/**
 * A fresh proof made before an act that asks for one: a passkey of the
 * account (both factors at once), or the password (null: the account has
 * none) and a code (null: no code factor).
 */
export type FreshProof = "passkey" | { password: string | null; factor: FactorProof | null };

/** A ceremony the API began: its id, and the options for the browser. */
interface Ceremony<T> {
  ceremony: string;
  expires_in: number;
  options: { publicKey: T; mediation?: CredentialMediationRequirement };
}

/**
 * Whether this browser can use passkeys the way the page does (WebAuthn's
 * JSON helpers), and offers them in its username autofill (conditional
 * mediation).
 */
export async function passkeySupport(): Promise<{ passkeys: boolean; autofill: boolean }> {
  const credential = (globalThis as { PublicKeyCredential?: typeof PublicKeyCredential }).PublicKeyCredential;
  if (credential === undefined || typeof credential.parseRequestOptionsFromJSON !== "function") {
    return { passkeys: false, autofill: false };
  }
  const autofill =
    typeof credential.isConditionalMediationAvailable === "function" &&
    (await credential.isConditionalMediationAvailable());
  return { passkeys: true, autofill };
}

/**
 * A refusal of the browser's own (the person closed its dialog, or it
 * timed out, or this page's origin is not the passkeys' site): no API
 * error, a plain message.
 */
function browserRefusal(error: unknown): ApiError {
  const name = error instanceof DOMException ? error.name : "";
  if (name === "NotAllowedError" || name === "AbortError" || name === "TimeoutError") {
    return new ApiError(0, "passkey_cancelled", "No passkey was used. Try again, or sign in another way.");
  }
  if (name === "InvalidStateError") {
    return new ApiError(0, "passkey_exists", "This device already holds a passkey for this account.");
  }
  if (name === "SecurityError") {
    return new ApiError(0, "passkey_unavailable", "Passkeys do not work on this address of the page.");
  }
  return new ApiError(0, "passkey_unavailable", "This browser could not use a passkey here.");
}

/** What a provider's round trip came back with, from the page's fragment. */
export type ProviderOutcome =
  | { kind: "error"; code: string }
  | { kind: "connected" | "reauthenticated"; provider: string }
  /** The provider's sign-in was good; the account's second factor comes next. */
  | { kind: "second-step"; step: SecondStep };

/**
 * A sign-in whose first step (the password, or a provider) was good, for an
 * account with a second factor: `token` carries it to the second step (5
 * minutes, once). Held in memory only, as the access token is.
 */
export interface SecondStep {
  token: string;
  /** What the account can prove it with: "totp", "recovery_code", "passkey". */
  factors: string[];
}

/** What proves the second factor: a code of the app, or a recovery code. */
export type FactorProof = { code: string } | { recovery_code: string };

/** A second factor being set up: the secret an authenticator app takes (or its URI, as a QR code). */
export interface Enrolment {
  secret: string;
  otpauth_uri: string;
}

/**
 * The outcome a provider's round trip brought the page back with
 * (`#sign_in_error=…`, `#connected=…`, `#reauthenticated=…`), taken out of the
 * address bar and the history at once.
 */
export function takeProviderOutcome(): ProviderOutcome | null {
  if (window.location.hash.startsWith("#mfa_required=")) {
    // Out of the address bar and the history first, whatever its shape.
    const second = /^#mfa_required=([A-Za-z0-9_-]{43})$/.exec(window.location.hash);
    history.replaceState(null, "", window.location.pathname + window.location.search);
    if (second === null) return { kind: "error", code: "sign_in_failed" };
    return { kind: "second-step", step: { token: second[1] ?? "", factors: ["totp", "recovery_code"] } };
  }
  const match = /^#(sign_in_error|connected|reauthenticated)=([a-z0-9_-]{1,64})$/.exec(window.location.hash);
  if (match === null) return null;
  history.replaceState(null, "", window.location.pathname + window.location.search);
  const value = match[2] ?? "";
  if (match[1] === "sign_in_error") return { kind: "error", code: value };
  return { kind: match[1] === "connected" ? "connected" : "reauthenticated", provider: value };
}

/** What to tell a person whose round trip to a provider failed. */
export function providerProblem(code: string): string {
  switch (code) {
    case "access_denied":
      return "The sign-in was cancelled at the provider.";
    case "provider_unavailable":
      return "The provider did not answer in time. Try again in a moment.";
    case "identity_in_use":
      return "That account at the provider already signs in to another account here.";
    case "sign_up_closed":
      return "No account here uses that sign-in, and sign-up is closed: an administrator creates accounts.";
    default:
      return "The sign-in with the provider did not complete. Try again.";
  }
}

/** Who a reset is for: a username or an address, as the person typed it. */
export type Identifier = { username: string } | { email: string };

/** What the person typed: an address has an "@", a username never does. */
export function identifier(typed: string): Identifier {
  const value = typed.trim();
  return value.includes("@") ? { email: value } : { username: value };
}

/**
 * A secret the page was opened with, from its URL's fragment (a mailed
 * link: `#reset=…` or `#verify=…`), taken out of the address bar and the
 * history at once. The fragment never reaches a server, a log or a Referer.
 */
export function takeLinkSecret(): { kind: "reset" | "verify"; token: string } | null {
  const match = /^#(reset|verify)=([A-Za-z0-9_-]{1,128})$/.exec(window.location.hash);
  if (match === null) return null;
  history.replaceState(null, "", window.location.pathname + window.location.search);
  return { kind: match[1] as "reset" | "verify", token: match[2] ?? "" };
}

type Message = { type: "signed-in"; user: string } | { type: "signed-out" };

/** The codes after which a refresh is tried again, once. */
const RETRY_REFRESH = new Set([
  // Another tab or request rotated the token a moment ago: the browser now
  // holds its successor in the cookie.
  "refresh_token_superseded",
  // Several refreshes of one token contended and none won: nothing changed.
  "conflict",
]);

/**
 * How long a refresh that lost a race waits before its one retry: the API
 * answers the loser once the winner's rotation is stored, so the winner's
 * answer (and its cookie) is already on its way.
 */
const SUPERSEDED_RETRY_DELAY_MS = 250;
/** While the API cannot say whether there is a session: wait, doubling, up to this. */
const MAX_START_RETRY_DELAY_MS = 30_000;
/** A request that takes longer is abandoned: longer than the functions' 25 s timeout. */
const REQUEST_TIMEOUT_MS = 30_000;
/** Never refresh sooner than this after a token came (whatever its lifetime says). */
const MIN_REFRESH_DELAY_MS = 5_000;

/**
 * A refresh whose answer arrived after this tab signed in or out anew: it
 * says nothing about the session now. (Not a verdict: try again.)
 */
class StaleRefresh extends Error {
  constructor() {
    super("the session changed while refreshing");
    this.name = "StaleRefresh";
  }
}

export class AuthClient {
  readonly #api: URL;
  readonly #name: string;
  readonly #marginMs: number;
  readonly #credentials: RequestCredentials;
  readonly #channel: BroadcastChannel | null;
  readonly #listeners = new Set<() => void>();
  #state: AuthState = { status: "loading", problem: null };
  #token: { value: string; refreshAt: number } | null = null;
  #refreshing: Promise<string | null> | null = null;
  #starting: Promise<void> | null = null;
  #wake: (() => void) | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  // Bumped at this tab's login and every sign-out: a refresh that started
  // before one must not undo it when its answer arrives.
  #generation = 0;

  constructor(options: AuthOptions = {}) {
    this.#api = new URL(options.baseUrl ?? "/", location.href);
    this.#name = options.name ?? "auth";
    this.#marginMs = (options.refreshMarginSeconds ?? 60) * 1000;
    // The cookie goes with same-origin calls by default; another origin must
    // ask for it (and be one the API allows, with credentials).
    this.#credentials = this.#api.origin === location.origin ? "same-origin" : "include";
    this.#channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(`${this.#name}:session`) : null;
    if (this.#channel) {
      this.#channel.onmessage = (event: MessageEvent<Message>) => {
        this.#onMessage(event.data);
      };
    }
  }

  /** The current state; `subscribe` tells when it changes. */
  get state(): AuthState {
    return this.#state;
  }

  /** Calls `listener` at every change of state; returns the unsubscribe. (Bound: pass it as is.) */
  readonly subscribe = (listener: () => void): (() => void) => {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  };

  /** Stops the refresh timer and leaves the tabs' channel (a page that drops this client). */
  close(): void {
    clearTimeout(this.#timer);
    this.#channel?.close();
    this.#listeners.clear();
  }

  /**
   * At page load: resume the session the cookie holds, if any. Until the API
   * gives a verdict (a session, or none) the state stays "loading": showing
   * the login form while the API is unreachable would invite a second login
   * beside a live session.
   */
  start(): Promise<void> {
    this.#starting ??= this.#resume().finally(() => {
      this.#starting = null;
    });
    return this.#starting;
  }

  // Until a verdict: a token (signed in) or none (signed out). The status is
  // read anew at each turn: another tab's login may ask for another round.
  async #resume(): Promise<void> {
    let wait = 1000;
    while (this.#status() === "loading") {
      try {
        // A refresh that finds no session signs this tab out itself.
        await this.#refresh();
      } catch (error) {
        if (error instanceof StaleRefresh || this.#status() !== "loading") continue;
        this.#setState({ status: "loading", problem: describe(error) });
        const retryAfter = error instanceof ApiError && error.retryAfter !== null ? error.retryAfter * 1000 : 0;
        await this.#pause(Math.max(wait, retryAfter));
        wait = Math.min(wait * 2, MAX_START_RETRY_DELAY_MS);
      }
    }
  }

  // A wait that a message from another tab cuts short.
  #pause(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    }).finally(() => {
      this.#wake = null;
    });
  }

  /** A new account; `email`, if given, is mailed a link and a code to verify it. */
  async register(username: string, password: string, name: string, email = ""): Promise<void> {
    const json = email.trim() === "" ? { username, password, name } : { username, password, name, email: email.trim() };
    const response = await this.#send("/register", { method: "POST", json }, null);
    if (!response.ok) throw await problem(response);
  }

  /**
   * Asks for a reset: the API's answer is the same whoever it names, and so
   * is what this returns (its message).
   */
  async requestReset(who: Identifier): Promise<string> {
    const response = await this.#send("/password/reset", { method: "POST", json: who }, null);
    if (!response.ok) throw await problem(response);
    return ((await response.json()) as { message: string }).message;
  }

  /**
   * Sets a new password with a mailed link's token, or its code and whom it
   * was asked for. No session starts: the person then signs in.
   */
  async confirmReset(proof: { token: string } | (Identifier & { code: string }), newPassword: string): Promise<void> {
    const response = await this.#send(
      "/password/reset/confirm",
      { method: "POST", json: { ...proof, new_password: newPassword } },
      null,
    );
    if (!response.ok) throw await problem(response);
  }

  /** Verifies an address with a mailed link's token (any browser, signed in or not). */
  async verifyEmailLink(token: string): Promise<EmailView> {
    const response = await this.#send("/account/email/verify", { method: "POST", json: { token } }, null);
    if (!response.ok) throw await problem(response);
    return (await response.json()) as EmailView;
  }

  /** The signed-in user's addresses. */
  async email(): Promise<EmailView> {
    const response = await this.fetch("/account/email");
    if (!response.ok) throw await problem(response);
    return (await response.json()) as EmailView;
  }

  /**
   * Gives a new address, proving the password first (a change of address
   * needs a fresh proof): a link and a code go to it.
   */
  async setEmail(address: string, password: string): Promise<EmailView> {
    await this.#reauthenticate(password);
    const response = await this.fetch("/account/email", { method: "PUT", json: { email: address.trim() } });
    if (!response.ok) throw await problem(response);
    return (await response.json()) as EmailView;
  }

  /** Verifies the pending address with its mailed code. */
  async verifyEmailCode(code: string): Promise<EmailView> {
    const response = await this.fetch("/account/email/verify", { method: "POST", json: { code } });
    if (!response.ok) throw await problem(response);
    return (await response.json()) as EmailView;
  }

  /** Removes the addresses, proving the password first. */
  async removeEmail(password: string): Promise<EmailView> {
    await this.#reauthenticate(password);
    const response = await this.fetch("/account/email", { method: "DELETE" });
    if (!response.ok) throw await problem(response);
    return (await response.json()) as EmailView;
  }

  /** Proves the password again within this session: a fresher access token. */
  async #reauthenticate(password: string): Promise<void> {
    await this.#locked(async () => {
      const response = await this.#authorized(
        "/reauthenticate",
        { method: "POST", json: { password } },
        () => this.#refreshOnce(),
      );
      if (response === null) throw sessionEnded();
      if (!response.ok) throw await problem(response);
      this.#adopt((await response.json()) as TokenAnswer);
    });
  }

  /**
   * Signs in with the password. For an account with a second factor, no
   * session yet: the answer is the second step, for `completeSignIn`.
   */
  async login(username: string, password: string): Promise<SecondStep | null> {
    return this.#signIn("/login", { username, password, refresh_token_delivery: "cookie" });
  }

  /** The second step of a sign-in with one of the account's passkeys. */
  async completeSignInWithPasskey(step: SecondStep): Promise<void> {
    const begun = await this.#send("/login/passkey/options", { method: "POST", json: { mfa_token: step.token } }, null);
    if (!begun.ok) throw await problem(begun);
    const { ceremony, options } = (await begun.json()) as Ceremony<PublicKeyCredentialRequestOptionsJSON>;
    const credential = await this.#get(options.publicKey, {});
    await this.#signIn("/login/passkey", {
      ceremony,
      credential,
      mfa_token: step.token,
      refresh_token_delivery: "cookie",
    });
  }

  /** The second step of a sign-in: a code of the app, or a recovery code. */
  async completeSignIn(step: SecondStep, proof: FactorProof): Promise<void> {
    await this.#signIn("/login/second-factor", { mfa_token: step.token, ...proof, refresh_token_delivery: "cookie" });
  }

  // A sign-in: tokens (signed in, every tab told), the second step, or why not.
  async #signIn(path: string, json: unknown): Promise<SecondStep | null> {
    // Under the refresh lock: no tab's refresh may send the cookie this
    // sign-in is about to replace.
    const outcome = await this.#locked(async (): Promise<{ user: string } | { step: SecondStep }> => {
      this.#generation++;
      const response = await this.#send(path, { method: "POST", json }, null);
      if (response.status === 401 && (await errorCode(response)) === "mfa_required") {
        const body = (await response.json()) as { mfa_token: string; factors: string[] };
        return { step: { token: body.mfa_token, factors: body.factors } };
      }
      if (!response.ok) throw await problem(response);
      return { user: this.#adopt((await response.json()) as TokenAnswer) };
    });
    if ("step" in outcome) return outcome.step;
    this.#broadcast({ type: "signed-in", user: outcome.user });
    return null;
  }

  /**
   * Begins setting up a second factor, proving the password first where
   * the account has one (it needs a fresh sign-in), or one of its passkeys
   * where it has one (it needs the second factor): the secret and its URI.
   */
  async beginSecondFactor(proof: FreshProof): Promise<Enrolment> {
    await this.#prove(proof);
    const response = await this.fetch("/account/second-factor", { method: "POST", json: {} });
    if (!response.ok) throw await problem(response);
    return (await response.json()) as Enrolment;
  }

  /** Completes the set-up with a code of the app: the ten recovery codes, shown once. */
  async confirmSecondFactor(code: string): Promise<string[]> {
    const response = await this.fetch("/account/second-factor/confirm", { method: "POST", json: { code } });
    if (!response.ok) throw await problem(response);
    return ((await response.json()) as { recovery_codes: string[] }).recovery_codes;
  }

  /** Removes the second factor: the password (a fresh proof) and a code. */
  async removeSecondFactor(password: string | null, proof: FactorProof): Promise<void> {
    if (password !== null) await this.#reauthenticate(password);
    const response = await this.fetch("/account/second-factor", { method: "DELETE", json: proof });
    if (!response.ok) throw await problem(response);
  }

  /** New recovery codes for the old: the password (a fresh proof) and a code. */
  async newRecoveryCodes(password: string | null, proof: FactorProof): Promise<string[]> {
    if (password !== null) await this.#reauthenticate(password);
    const response = await this.fetch("/account/second-factor/recovery-codes", { method: "POST", json: proof });
    if (!response.ok) throw await problem(response);
    return ((await response.json()) as { recovery_codes: string[] }).recovery_codes;
  }

  /** Steps this session up with a code (RFC 9470 `aal2`), for the acts that need it. */
  async #stepUp(proof: FactorProof): Promise<void> {
    await this.#locked(async () => {
      const response = await this.#authorized(
        "/account/second-factor/verify",
        { method: "POST", json: proof },
        () => this.#refreshOnce(),
      );
      if (response === null) throw sessionEnded();
      if (!response.ok) throw await problem(response);
      this.#adopt((await response.json()) as TokenAnswer);
    });
  }

  /**
   * Signs in with a passkey, no username: the browser's own chooser (a
   * button), or, with `autofill`, its username field's suggestions
   * (conditional mediation), which wait for the person until `signal`
   * aborts or the ceremony expires (then: an `AbortError` refusal).
   */
  async signInWithPasskey({ autofill = false, signal }: { autofill?: boolean; signal?: AbortSignal } = {}): Promise<void> {
    const begun = await this.#send("/login/passkey/options", { method: "POST", json: {} }, null);
    if (!begun.ok) throw await problem(begun);
    const { ceremony, expires_in, options } = (await begun.json()) as Ceremony<PublicKeyCredentialRequestOptionsJSON>;
    const expiry = AbortSignal.timeout(expires_in * 1000);
    const credential = await this.#get(options.publicKey, {
      ...(autofill ? { mediation: "conditional" as const } : {}),
      signal: signal === undefined ? expiry : AbortSignal.any([signal, expiry]),
    });
    await this.#signIn("/login/passkey", {
      ceremony,
      credential,
      refresh_token_delivery: "cookie",
    });
  }

  /** The account's passkeys. */
  async passkeys(): Promise<PasskeyInfo[]> {
    const response = await this.fetch("/account/passkeys");
    if (!response.ok) throw await problem(response);
    return ((await response.json()) as { passkeys: PasskeyInfo[] }).passkeys;
  }

  /**
   * Adds a passkey made by this browser, named `name`. It needs a fresh
   * proof: one of the account's passkeys, or (an account with none) the
   * password again and, where the account has one, a code.
   */
  async addPasskey(name: string, proof: FreshProof): Promise<PasskeyInfo> {
    await this.#prove(proof);
    const begun = await this.fetch("/account/passkeys/options", { method: "POST", json: {} });
    if (!begun.ok) throw await problem(begun);
    const { ceremony, options } = (await begun.json()) as Ceremony<PublicKeyCredentialCreationOptionsJSON>;
    let made: Credential | null;
    try {
      made = await navigator.credentials.create({
        publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options.publicKey),
      });
    } catch (error) {
      throw browserRefusal(error);
    }
    if (!(made instanceof PublicKeyCredential)) throw browserRefusal(null);
    const response = await this.fetch("/account/passkeys", {
      method: "POST",
      json: { ceremony, credential: made.toJSON(), name },
    });
    if (!response.ok) throw await problem(response);
    return (await response.json()) as PasskeyInfo;
  }

  /** Renames one of the account's passkeys. */
  async renamePasskey(id: string, name: string): Promise<PasskeyInfo> {
    const response = await this.fetch(`/account/passkeys/${encodeURIComponent(id)}`, {
      method: "PATCH",
      json: { name },
    });
    if (!response.ok) throw await problem(response);
    return (await response.json()) as PasskeyInfo;
  }

  /**
   * Removes one of the account's passkeys, with a fresh proof first: one
   * of the passkeys, or (their device lost) the password and a code.
   */
  async removePasskey(id: string, proof: FreshProof = "passkey"): Promise<void> {
    await this.#prove(proof);
    const response = await this.fetch(`/account/passkeys/${encodeURIComponent(id)}`, { method: "DELETE" });
    if (!response.ok) throw await problem(response);
  }

  /**
   * Proves one of the account's passkeys within this session: a fresh
   * proof and the second factor at once (`aal2`), for the acts that ask.
   */
  async proveWithPasskey(): Promise<void> {
    const begun = await this.fetch("/account/passkeys/verify/options", { method: "POST", json: {} });
    if (!begun.ok) throw await problem(begun);
    const { ceremony, options } = (await begun.json()) as Ceremony<PublicKeyCredentialRequestOptionsJSON>;
    const credential = await this.#get(options.publicKey, {});
    await this.#locked(async () => {
      const response = await this.#authorized(
        "/account/passkeys/verify",
        { method: "POST", json: { ceremony, credential } },
        () => this.#refreshOnce(),
      );
      if (response === null) throw sessionEnded();
      if (!response.ok) throw await problem(response);
      this.#adopt((await response.json()) as TokenAnswer);
    });
  }

  // The proof an act asks for, made in this session.
  async #prove(proof: FreshProof): Promise<void> {
    if (proof === "passkey") {
      await this.proveWithPasskey();
      return;
    }
    if (proof.password !== null) await this.#reauthenticate(proof.password);
    if (proof.factor !== null) await this.#stepUp(proof.factor);
  }

  // The browser's answer to a challenge, as WebAuthn's JSON.
  async #get(
    options: PublicKeyCredentialRequestOptionsJSON,
    request: { mediation?: CredentialMediationRequirement; signal?: AbortSignal },
  ): Promise<RegistrationResponseJSON | AuthenticationResponseJSON> {
    let answer: Credential | null;
    try {
      answer = await navigator.credentials.get({
        publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options),
        ...request,
      });
    } catch (error) {
      throw browserRefusal(error);
    }
    if (!(answer instanceof PublicKeyCredential)) throw browserRefusal(null);
    return answer.toJSON();
  }

  /**
   * Ends this session (or, with `everywhere`, every session of the user) and
   * signs out every tab. Throws, and stays signed in, if the API did not end it.
   */
  async logout({ everywhere = false }: { everywhere?: boolean } = {}): Promise<void> {
    await this.#locked(async () => {
      const response = await this.#authorized(
        "/logout",
        { method: "POST", json: everywhere ? { all: true } : {} },
        () => this.#refreshOnce(),
      );
      // null: no session was left to end (the refresh found none). Anything
      // but 200 otherwise: the session may live on, so this tab does too.
      if (response !== null && !response.ok) throw await problem(response);
      this.#signedOut(null);
      this.#broadcast({ type: "signed-out" });
    });
  }

  /** Proves the current password and sets a new one; the session goes on as a new one. */
  async changePassword(currentPassword: string, newPassword: string): Promise<void> {
    // Under the refresh lock: the answer replaces the cookie every tab uses.
    await this.#locked(async () => {
      const response = await this.#authorized(
        "/password",
        {
          method: "POST",
          json: { current_password: currentPassword, new_password: newPassword, refresh_token_delivery: "cookie" },
        },
        () => this.#refreshOnce(),
      );
      if (response === null) throw sessionEnded();
      if (!response.ok) throw await problem(response);
      this.#adopt((await response.json()) as TokenAnswer);
    });
  }

  /**
   * Deletes the account for good, proving the current password, and signs
   * out every tab (the API clears the cookie). Throws, and stays signed in,
   * if the API did not delete it.
   */
  async deleteAccount(password: string | null, secondFactor: FactorProof | "passkey" | null = null): Promise<void> {
    // With a second factor: a fresh proof of both, in this session, first
    // (a passkey proves both at once).
    if (secondFactor === "passkey") {
      await this.proveWithPasskey();
    } else if (secondFactor !== null) {
      if (password !== null) await this.#reauthenticate(password);
      await this.#stepUp(secondFactor);
    }
    await this.#locked(async () => {
      const response = await this.#authorized(
        "/account",
        // An account without a password: a fresh proof at its provider instead.
        { method: "DELETE", json: password === null ? {} : { password } },
        () => this.#refreshOnce(),
      );
      if (response === null) throw sessionEnded();
      if (!response.ok) throw await problem(response);
      this.#signedOut("Your account has been deleted.");
      this.#broadcast({ type: "signed-out" });
    });
  }

  /** The outside identity providers this service signs in with. */
  async providers(): Promise<Provider[]> {
    const response = await this.#send("/oidc/providers", {}, null);
    if (!response.ok) throw await problem(response);
    return ((await response.json()) as { providers: Provider[] }).providers;
  }

  /**
   * Leaves for `provider`'s sign-in. The browser comes back to the page
   * signed in (a new account on a first sign-in), or with why not
   * (`takeProviderOutcome`).
   */
  async signInWith(provider: string): Promise<void> {
    const response = await this.#send(this.#start(provider), { method: "POST", json: {} }, null);
    await this.#leaveFor(response);
  }

  /**
   * Connects `provider` to the signed-in account: the password first (a
   * fresh proof), where the account has one; then the provider's sign-in,
   * made just then. The page comes back with `connected` (or why not).
   */
  async connectProvider(provider: string, password: string | null): Promise<void> {
    if (password !== null) await this.#reauthenticate(password);
    const response = await this.fetch(this.#start(provider), { method: "POST", json: { intent: "connect" } });
    await this.#leaveFor(response);
  }

  /**
   * For an account without a password: a fresh proof at `provider` (a
   * sign-in made just then), which opens what a recent password opens.
   */
  async reauthenticateWith(provider: string): Promise<void> {
    const response = await this.fetch(this.#start(provider), { method: "POST", json: { intent: "reauthenticate" } });
    await this.#leaveFor(response);
  }

  /** The ways the signed-in account signs in. */
  async identities(): Promise<Identities> {
    const response = await this.fetch("/account/identities");
    if (!response.ok) throw await problem(response);
    return (await response.json()) as Identities;
  }

  /** Disconnects `provider`, proving the password first where there is one. */
  async disconnect(provider: string, password: string | null): Promise<void> {
    if (password !== null) await this.#reauthenticate(password);
    const response = await this.fetch(`/account/identities/${encodeURIComponent(provider)}`, { method: "DELETE" });
    if (!response.ok) throw await problem(response);
  }

  /**
   * An account without a password sets its first, after a fresh proof at
   * its provider; the session goes on as a new one.
   */
  async setPassword(newPassword: string): Promise<void> {
    await this.#locked(async () => {
      const response = await this.#authorized(
        "/password",
        { method: "POST", json: { new_password: newPassword, refresh_token_delivery: "cookie" } },
        () => this.#refreshOnce(),
      );
      if (response === null) throw sessionEnded();
      if (!response.ok) throw await problem(response);
      this.#adopt((await response.json()) as TokenAnswer);
    });
  }

  #start(provider: string): string {
    return `/oidc/${encodeURIComponent(provider)}/start`;
  }

  /** Follows a round trip's start to the provider, or throws why not. */
  async #leaveFor(response: Response): Promise<void> {
    if (!response.ok) throw await problem(response);
    const { authorization_url: url } = (await response.json()) as { authorization_url: string };
    const target = new URL(url);
    if (target.protocol !== "https:" && target.protocol !== "http:") {
      throw new TypeError("the provider's address is not a web page");
    }
    window.location.assign(target.href);
  }

  /** The user's live sessions, newest first; `truncated`: more are live than listed. */
  async sessions(): Promise<{ sessions: SessionInfo[]; truncated: boolean }> {
    const response = await this.fetch("/sessions");
    if (!response.ok) throw await problem(response);
    return (await response.json()) as { sessions: SessionInfo[]; truncated: boolean };
  }

  /**
   * Ends one of the user's sessions (another device's). This tab's own is
   * ended with `logout()`, which also clears its cookie and signs every tab out.
   */
  async endSession(id: string): Promise<void> {
    const response = await this.fetch(`/sessions/${encodeURIComponent(id)}`, { method: "DELETE" });
    if (!response.ok) throw await problem(response);
  }

  /**
   * A call to the API with the access token. Retried once, after a refresh,
   * when the answer says the token was expired or invalid: never otherwise.
   * `path` is a path of the API (it starts with one "/"): the token is never
   * sent anywhere else.
   */
  async fetch(path: string, options: CallOptions = {}): Promise<Response> {
    const response = await this.#authorized(path, options, () => this.#refresh());
    if (response === null) throw sessionEnded();
    return response;
  }

  #status(): AuthState["status"] {
    return this.#state.status;
  }

  #fresh(): string | null {
    return this.#token !== null && Date.now() < this.#token.refreshAt ? this.#token.value : null;
  }

  // With a token (refreshed first if due); after invalid_token one refresh and
  // one retry. null: there is no session (the refresh found none).
  async #authorized(
    path: string,
    options: CallOptions,
    refresh: () => Promise<string | null>,
  ): Promise<Response | null> {
    const token = this.#fresh() ?? (await refresh());
    if (token === null) return null;
    const response = await this.#send(path, options, token);
    if (response.status !== 401 || (await errorCode(response)) !== "invalid_token") return response;
    const fresh = await refresh();
    return fresh === null ? null : this.#send(path, options, fresh);
  }

  // One refresh at a time: in this tab (callers share the promise) and across
  // tabs (the Web Lock: the next tab's refresh then sends the cookie the
  // previous one set). Login, logout and password change hold the same lock.
  #refresh(): Promise<string | null> {
    if (this.#refreshing === null) {
      const refreshing: Promise<string | null> = this.#locked(() => this.#refreshOnce()).finally(() => {
        if (this.#refreshing === refreshing) this.#refreshing = null;
      });
      this.#refreshing = refreshing;
    }
    return this.#refreshing;
  }

  #locked<T>(work: () => Promise<T>): Promise<T> {
    // Web Locks exist in every secure context (https, localhost); elsewhere
    // the API's grace period and this module's retry keep a race harmless.
    const locks = (navigator as Partial<Navigator>).locks;
    return locks ? locks.request(`${this.#name}:session`, work) : work();
  }

  // Under the lock, or where there is none.
  async #refreshOnce(): Promise<string | null> {
    const generation = this.#generation;
    for (let attempt = 0; ; attempt++) {
      const response = await this.#send("/refresh", { method: "POST", json: {} }, null);
      if (response.ok) {
        const answer = (await response.json()) as TokenAnswer;
        if (generation !== this.#generation) throw new StaleRefresh();
        this.#adopt(answer);
        return answer.access_token;
      }
      const error = await problem(response);
      if (RETRY_REFRESH.has(error.code) && attempt === 0) {
        // The winner's answer, with the new cookie, is on its way.
        await sleep(SUPERSEDED_RETRY_DELAY_MS);
        continue;
      }
      // No cookie (400), or a dead session (401 invalid_grant: the API has
      // cleared the cookie): signed out. Anything else (a lost race twice,
      // 403, 429, 503) is no verdict on the session: keep it, report it.
      if (error.code === "invalid_grant" || (response.status === 400 && error.code === "invalid_request")) {
        if (generation !== this.#generation) throw new StaleRefresh();
        if (this.#state.status !== "signed-out") {
          this.#signedOut(this.#state.status === "signed-in" ? "Your session has ended. Please log in again." : null);
        }
        return null;
      }
      throw error;
    }
  }

  /** Holds the new access token and schedules its refresh; returns its subject. */
  #adopt(answer: TokenAnswer): string {
    const user = subject(answer.access_token);
    const lifetimeMs = answer.expires_in * 1000;
    // Ahead of expiry by the margin, but never sooner than half the lifetime.
    const delay = Math.max(MIN_REFRESH_DELAY_MS, lifetimeMs / 2, lifetimeMs - this.#marginMs);
    this.#token = { value: answer.access_token, refreshAt: Date.now() + delay };
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#refresh().catch(() => {
        // A transient failure: the next call refreshes on demand.
      });
    }, delay);
    this.#setState({ status: "signed-in", user });
    return user;
  }

  #signedOut(notice: string | null): void {
    this.#generation++;
    this.#dropToken();
    // A refresh still in flight belongs to the session that ended: later
    // callers start their own.
    this.#refreshing = null;
    this.#setState({ status: "signed-out", notice });
  }

  #dropToken(): void {
    this.#token = null;
    clearTimeout(this.#timer);
  }

  #onMessage(message: Message): void {
    if (message.type === "signed-out") {
      if (this.#state.status !== "signed-out") this.#signedOut("You logged out in another tab.");
      return;
    }
    const state = this.#state;
    if (state.status === "signed-in" && state.user === message.user) return;
    // Another tab signed in, perhaps as someone else: the cookie is theirs
    // now. Drop what this tab holds and resume the session the cookie holds.
    // (A refresh of this tab still running started after that login, which
    // held the lock: its answer is the new session's, and is kept.)
    this.#dropToken();
    this.#setState({ status: "loading", problem: null });
    this.#wake?.();
    void this.start();
  }

  #broadcast(message: Message): void {
    this.#channel?.postMessage(message);
  }

  #setState(state: AuthState): void {
    this.#state = state;
    for (const listener of this.#listeners) listener();
  }

  #send(path: string, { method = "GET", json }: CallOptions, token: string | null): Promise<Response> {
    const headers: Record<string, string> = {};
    if (token !== null) headers.Authorization = `Bearer ${token}`;
    if (json !== undefined) headers["Content-Type"] = "application/json";
    return fetch(this.#url(path), {
      method,
      headers,
      body: json === undefined ? null : JSON.stringify(json),
      credentials: this.#credentials,
      cache: "no-store",
      // The API never redirects; a redirect would carry the token elsewhere.
      redirect: "error",
      // A stalled call must not hold the tabs' lock for ever.
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  }

  /** A path of the API as a URL that is certainly the API's. */
  #url(path: string): string {
    const prefix = this.#api.pathname.replace(/\/+$/, "");
    const dotSegment = /(^|[/\\])\.\.?([/\\?#]|$)/;
    if (!path.startsWith("/") || path.startsWith("//") || dotSegment.test(path)) {
      throw new TypeError(`not a path of the API: ${path}`);
    }
    const url = new URL(prefix + path, this.#api.origin);
    if (url.origin !== this.#api.origin || !url.pathname.startsWith(`${prefix}/`)) {
      throw new TypeError(`not a path of the API: ${path}`);
    }
    return url.href;
  }
}

function sessionEnded(): ApiError {
  return new ApiError(401, "session_ended", "Your session has ended. Please log in again.");
}

/** What to show a person for any failure. */
export function describe(error: unknown): string {
  if (error instanceof ApiError) return error.userMessage;
  return "The service could not be reached. Check your connection and try again.";
}

/** The `sub` of our own access token (read, not verified: the API verifies it). */
function subject(token: string): string {
  const payload = token.split(".")[1] ?? "";
  const bytes = Uint8Array.from(atob(payload.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const claims = JSON.parse(new TextDecoder().decode(bytes)) as { sub?: unknown };
  if (typeof claims.sub !== "string") throw new TypeError("the access token has no subject");
  return claims.sub;
}

/** The API's error answer as an ApiError (any non-JSON answer too). */
export async function problem(response: Response): Promise<ApiError> {
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  const wait = Number.isFinite(retryAfter) ? retryAfter : null;
  try {
    const body = (await response.json()) as { error?: unknown; message?: unknown };
    if (typeof body.error === "string" && typeof body.message === "string") {
      return new ApiError(response.status, body.error, body.message, wait);
    }
  } catch {
    // Not JSON: API Gateway's own answer, or a proxy's.
  }
  return new ApiError(response.status, "http_error", `The server answered ${response.status}.`, wait);
}

async function errorCode(response: Response): Promise<string | null> {
  try {
    const body = (await response.clone().json()) as { error?: unknown };
    return typeof body.error === "string" ? body.error : null;
  } catch {
    return null;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function formatWait(seconds: number): string {
  if (seconds < 90) return `${seconds} s`;
  return `${Math.ceil(seconds / 60)} min`;
}
