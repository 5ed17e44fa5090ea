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
  | { status: "loading" }
  | { status: "signed-out"; notice: string | null }
  | { status: "signed-in" };

export interface AuthOptions {
  /** Where the API is; "" (the default) is this page's own origin. */
  baseUrl?: string;
  /** Names the Web Lock and the BroadcastChannel shared by the tabs. */
  name?: string;
  /** Refresh this long before the access token expires (seconds). */
  refreshMarginSeconds?: number;
}

interface TokenAnswer {
  access_token: string;
  expires_in: number;
}

type Message = { type: "signed-in" } | { type: "signed-out" };

/** The codes after which a refresh is tried again, once, at once. */
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

export class AuthClient {
  readonly #baseUrl: string;
  readonly #name: string;
  readonly #marginMs: number;
  readonly #credentials: RequestCredentials;
  readonly #channel: BroadcastChannel | null;
  readonly #listeners = new Set<() => void>();
  #state: AuthState = { status: "loading" };
  #token: { value: string; expiresAt: number } | null = null;
  #refreshing: Promise<string | null> | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  // Bumped at every sign-in and sign-out: a refresh that started before one
  // must not undo it when its answer arrives.
  #generation = 0;

  constructor(options: AuthOptions = {}) {
    this.#baseUrl = (options.baseUrl ?? "").replace(/\/+$/, "");
    this.#name = options.name ?? "auth";
    this.#marginMs = (options.refreshMarginSeconds ?? 60) * 1000;
    // The cookie goes with same-origin calls by default; another origin must
    // ask for it (and be one the API allows, with credentials).
    this.#credentials = this.#baseUrl === "" ? "same-origin" : "include";
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

  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** At page load: resume the session the cookie holds, if any. */
  async start(): Promise<void> {
    try {
      const token = await this.#refresh();
      if (token === null && this.#state.status === "loading") this.#signedOut(null);
    } catch {
      // The API is unreachable or busy: a person can still try to log in.
      if (this.#state.status === "loading") this.#signedOut(null);
    }
  }

  async register(username: string, password: string, name: string): Promise<void> {
    const response = await this.#post("/register", { username, password, name });
    if (!response.ok) throw await problem(response);
  }

  async login(username: string, password: string): Promise<void> {
    const generation = ++this.#generation;
    const response = await this.#post("/login", { username, password, refresh_token_delivery: "cookie" });
    if (!response.ok) throw await problem(response);
    this.#adopt((await response.json()) as TokenAnswer, generation);
    this.#broadcast({ type: "signed-in" });
  }

  /** Ends this session (or, with `everywhere`, every session of the user). */
  async logout({ everywhere = false }: { everywhere?: boolean } = {}): Promise<void> {
    const response = await this.fetch("/logout", { method: "POST", json: everywhere ? { all: true } : {} });
    // 401: the session had already ended (elsewhere, or it expired).
    if (!response.ok && response.status !== 401) throw await problem(response);
    this.#signedOut(null);
    this.#broadcast({ type: "signed-out" });
  }

  /** Proves the current password and sets a new one; the session goes on as a new one. */
  async changePassword(currentPassword: string, newPassword: string): Promise<void> {
    const generation = this.#generation;
    const response = await this.fetch("/password", {
      method: "POST",
      json: { current_password: currentPassword, new_password: newPassword, refresh_token_delivery: "cookie" },
    });
    if (!response.ok) throw await problem(response);
    this.#adopt((await response.json()) as TokenAnswer, generation);
  }

  /**
   * A call to the API with the access token. Retried once, after a refresh,
   * when the answer says the token was expired or invalid: never otherwise.
   */
  async fetch(path: string, { method = "GET", json }: { method?: string; json?: unknown } = {}): Promise<Response> {
    const send = (token: string | null): Promise<Response> => {
      const headers: Record<string, string> = {};
      if (token !== null) headers.Authorization = `Bearer ${token}`;
      if (json !== undefined) headers["Content-Type"] = "application/json";
      return fetch(this.#baseUrl + path, {
        method,
        headers,
        body: json === undefined ? null : JSON.stringify(json),
        credentials: this.#credentials,
        cache: "no-store",
      });
    };
    const response = await send(await this.accessToken());
    if (response.status !== 401 || (await errorCode(response)) !== "invalid_token") return response;
    const fresh = await this.#refresh();
    return fresh === null ? response : send(fresh);
  }

  /** The access token, refreshed first when it is about to expire; null when signed out. */
  async accessToken(): Promise<string | null> {
    if (this.#token && Date.now() < this.#token.expiresAt - this.#marginMs) return this.#token.value;
    if (this.#state.status !== "signed-in") return null;
    return this.#refresh();
  }

  // One refresh at a time: in this tab (callers share the promise) and across
  // tabs (the Web Lock: the next tab's refresh then sends the cookie the
  // previous one set).
  #refresh(): Promise<string | null> {
    this.#refreshing ??= this.#locked(() => this.#refreshOnce()).finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  #locked<T>(work: () => Promise<T>): Promise<T> {
    // Web Locks exist in every secure context (https, localhost); elsewhere
    // the API's grace period and this module's retry keep a race harmless.
    const locks = (navigator as Partial<Navigator>).locks;
    return locks ? locks.request(`${this.#name}:refresh`, work) : work();
  }

  async #refreshOnce(): Promise<string | null> {
    const generation = this.#generation;
    for (let attempt = 0; ; attempt++) {
      const response = await this.#post("/refresh", {});
      if (response.ok) {
        return this.#adopt((await response.json()) as TokenAnswer, generation);
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
        if (generation === this.#generation && this.#state.status !== "signed-out") {
          this.#signedOut(this.#state.status === "signed-in" ? "Your session has ended. Please log in again." : null);
        }
        return null;
      }
      throw error;
    }
  }

  #adopt(answer: TokenAnswer, generation: number): string | null {
    if (generation !== this.#generation) return null;
    this.#token = { value: answer.access_token, expiresAt: Date.now() + answer.expires_in * 1000 };
    clearTimeout(this.#timer);
    // Ahead of expiry, but never sooner than half the lifetime.
    const delay = Math.max(answer.expires_in * 500, answer.expires_in * 1000 - this.#marginMs);
    this.#timer = setTimeout(() => {
      this.#refresh().catch(() => {
        // A transient failure: the next call refreshes on demand.
      });
    }, delay);
    this.#setState({ status: "signed-in" });
    return answer.access_token;
  }

  #signedOut(notice: string | null): void {
    this.#generation++;
    this.#token = null;
    clearTimeout(this.#timer);
    this.#setState({ status: "signed-out", notice });
  }

  #onMessage(message: Message): void {
    if (message.type === "signed-out" && this.#state.status !== "signed-out") {
      this.#signedOut("You logged out in another tab.");
    } else if (message.type === "signed-in" && this.#state.status !== "signed-in") {
      void this.start();
    }
  }

  #broadcast(message: Message): void {
    this.#channel?.postMessage(message);
  }

  #setState(state: AuthState): void {
    this.#state = state;
    for (const listener of this.#listeners) listener();
  }

  #post(path: string, json: unknown): Promise<Response> {
    return fetch(this.#baseUrl + path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(json),
      credentials: this.#credentials,
      cache: "no-store",
    });
  }
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
