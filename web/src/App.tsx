// The page: React renders, the auth module decides. Every input has a label,
// every button says what it does, and results are announced (role="status",
// role="alert") so the page works from the keyboard and a screen reader.

import { useCallback, useEffect, useId, useRef, useState, useSyncExternalStore, type ReactNode } from "react";
import QRCode from "qrcode";
import {
  ApiError,
  describe,
  identifier,
  problem,
  providerProblem,
  takeLinkSecret,
  takeProviderOutcome,
  passkeySupport,
  type AuthClient,
  type EmailView,
  type Enrolment,
  type FactorProof,
  type FreshProof,
  type Identities,
  type PasskeyInfo,
  type Provider,
  type ProviderOutcome,
  type SecondStep,
  type SessionInfo,
} from "./auth";

type Outcome = { kind: "error" | "done"; text: string } | null;

/** Runs a form's action: the button is busy meanwhile, the outcome is shown. */
function useAction(): [boolean, Outcome, (work: () => Promise<string | null>) => void, () => void] {
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState<Outcome>(null);
  // The same function at every render (it uses the setters only): an
  // effect may depend on it.
  const run = useCallback((work: () => Promise<string | null>) => {
    setBusy(true);
    setOutcome(null);
    work()
      .then((done) => {
        setOutcome(done === null ? null : { kind: "done", text: done });
      })
      .catch((error: unknown) => {
        setOutcome({ kind: "error", text: describe(error) });
      })
      .finally(() => {
        setBusy(false);
      });
  }, []);
  return [busy, outcome, run, () => { setOutcome(null); }];
}

function Field(props: {
  label: string;
  type?: string;
  autoComplete: string;
  value: string;
  onChange: (value: string) => void;
  minLength?: number;
  optional?: boolean;
  inputMode?: "numeric";
}) {
  const id = useId();
  return (
    <div className="field">
      <label htmlFor={id}>{props.label}</label>
      <input
        id={id}
        name={props.autoComplete.split(" ")[0]}
        type={props.type ?? "text"}
        autoComplete={props.autoComplete}
        value={props.value}
        required={props.optional !== true}
        {...(props.inputMode === undefined ? {} : { inputMode: props.inputMode })}
        {...(props.minLength === undefined ? {} : { minLength: props.minLength })}
        onChange={(event) => {
          props.onChange(event.target.value);
        }}
      />
    </div>
  );
}

function Result({ outcome }: { outcome: Outcome }) {
  // Both regions are always present, so that assistive technology announces
  // what appears in them.
  return (
    <>
      <p role="alert" className="error">{outcome?.kind === "error" ? outcome.text : ""}</p>
      <p role="status" className="done">{outcome?.kind === "done" ? outcome.text : ""}</p>
    </>
  );
}

function Form(props: { title: string; onSubmit: () => void; children: ReactNode }) {
  const headingId = useId();
  return (
    <form
      aria-labelledby={headingId}
      onSubmit={(event) => {
        event.preventDefault();
        props.onSubmit();
      }}
    >
      <h2 id={headingId}>{props.title}</h2>
      {props.children}
    </form>
  );
}

/** Autofill rounds that end early, in a row, before the page stops asking. */
const AUTOFILL_MAX_FAILURES = 5;
/** A round shorter than this, without a sign-in, did not wait for the person. */
const AUTOFILL_SHORT_ROUND_MS = 30_000;

/** Waits until `arm`'s wake-up is called, or `signal` aborts. */
function until(signal: AbortSignal, arm: (wake: () => void) => void): Promise<void> {
  return new Promise((resolve) => {
    signal.addEventListener("abort", () => { resolve(); }, { once: true });
    arm(() => { resolve(); });
  });
}

/**
 * Passkeys at sign-in: the browser's username autofill offers them while
 * `armed` (conditional mediation: one touch, nothing typed), and `signIn`
 * opens the browser's own chooser (for browsers without the autofill).
 * A ceremony lasts minutes: when one ends unanswered, the next begins.
 */
function usePasskeyAutofill(
  auth: AuthClient,
  armed: boolean,
  run: (work: () => Promise<string | null>) => void,
): { available: boolean; signIn: () => void } {
  const [support, setSupport] = useState({ passkeys: false, autofill: false });
  // Bumped to arm the autofill again after the button's try.
  const [round, setRound] = useState(0);
  const waiting = useRef<AbortController | null>(null);
  useEffect(() => {
    void passkeySupport().then(setSupport);
  }, []);
  useEffect(() => {
    if (!armed || !support.autofill) return;
    const controller = new AbortController();
    waiting.current = controller;
    const stopped = () => controller.signal.aborted;
    void (async () => {
      // Rounds that ended early, without a sign-in, in a row: a browser or
      // an API that keeps refusing is not asked again and again (each round
      // counts in the API's login window); the button still works.
      let failures = 0;
      while (!stopped() && failures < AUTOFILL_MAX_FAILURES) {
        // A hidden tab begins no new ceremony until it is seen again.
        if (document.hidden) {
          await until(controller.signal, (wake) => {
            document.addEventListener("visibilitychange", wake, { once: true });
          });
          continue;
        }
        const began = Date.now();
        try {
          await auth.signInWithPasskey({ autofill: true, signal: controller.signal });
          return;
        } catch (error) {
          if (stopped()) return;
          // Passkeys cannot work on this address: no more rounds.
          if (error instanceof ApiError && error.code === "passkey_unavailable") return;
          const cancelled = error instanceof ApiError && error.code === "passkey_cancelled";
          if (!cancelled) {
            run(() => Promise.reject(error instanceof Error ? error : new Error(String(error))));
          }
          // A ceremony that ran its course (minutes) starts the count anew.
          failures = !cancelled || Date.now() - began < AUTOFILL_SHORT_ROUND_MS ? failures + 1 : 0;
          const retryAfter = error instanceof ApiError && error.retryAfter !== null ? error.retryAfter * 1000 : 0;
          const wait = Math.max(retryAfter, failures === 0 ? 1000 : 2000 * 2 ** failures);
          await until(controller.signal, (wake) => setTimeout(wake, wait));
        }
      }
    })();
    return () => {
      controller.abort();
    };
  }, [auth, armed, support.autofill, round, run]);
  const signIn = () => {
    // The browser serves one request at a time: the autofill's goes first.
    waiting.current?.abort();
    run(async () => {
      try {
        await auth.signInWithPasskey();
      } finally {
        setRound((r) => r + 1);
      }
      return null;
    });
  };
  return { available: support.passkeys, signIn };
}

function SignIn({
  auth,
  notice,
  pending,
  onDropPending,
}: {
  auth: AuthClient;
  notice: string | null;
  pending: SecondStep | null;
  onDropPending: () => void;
}) {
  const [mode, setMode] = useState<"login" | "register" | "forgot">("login");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [name, setName] = useState("");
  const [email, setEmail] = useState("");
  // A first step that was good, for an account with a second factor.
  const [step, setStep] = useState<SecondStep | null>(pending);
  const [busy, outcome, run, clear] = useAction();
  const switchTo = (next: "login" | "register" | "forgot") => {
    setMode(next);
    clear();
  };
  const passkeys = usePasskeyAutofill(auth, mode === "login" && step === null, run);

  if (step !== null) {
    return (
      <SecondStepForm
        auth={auth}
        step={step}
        onCancel={() => {
          setStep(null);
          setPassword("");
          onDropPending();
          clear();
        }}
      />
    );
  }

  if (mode === "forgot") {
    return <ForgotPassword auth={auth} onDone={() => { switchTo("login"); }} />;
  }

  if (mode === "register") {
    return (
      <Form
        title="Create an account"
        onSubmit={() => {
          run(async () => {
            await auth.register(username, password, name, email);
            await auth.login(username, password);
            return null;
          });
        }}
      >
        <Field label="Username" autoComplete="username" value={username} onChange={setUsername} />
        <Field label="Password" type="password" autoComplete="new-password" value={password} onChange={setPassword} />
        <Field label="Name" autoComplete="name" value={name} onChange={setName} />
        <Field label="Email (optional, to reset a forgotten password)" type="email" autoComplete="email" value={email} onChange={setEmail} optional />
        <Result outcome={outcome} />
        <div className="actions">
          <button type="submit" disabled={busy}>Register</button>
          <button type="button" className="link" onClick={() => { switchTo("login"); }}>
            I have an account
          </button>
        </div>
      </Form>
    );
  }
  return (
    <Form
      title="Log in"
      onSubmit={() => {
        run(async () => {
          const next = await auth.login(username, password);
          setPassword("");
          setStep(next);
          return null;
        });
      }}
    >
      {notice !== null && outcome === null && <p className="notice">{notice}</p>}
      {/* "webauthn": the browser offers the passkeys of this site here too. */}
      <Field label="Username" autoComplete="username webauthn" value={username} onChange={setUsername} />
      <Field label="Password" type="password" autoComplete="current-password" value={password} onChange={setPassword} />
      <Result outcome={outcome} />
      <div className="actions">
        <button type="submit" disabled={busy}>Log in</button>
        {passkeys.available && (
          <button type="button" disabled={busy} onClick={passkeys.signIn}>
            Sign in with a passkey
          </button>
        )}
        <button type="button" className="link" onClick={() => { switchTo("register"); }}>
          Create an account
        </button>
        <button type="button" className="link" onClick={() => { switchTo("forgot"); }}>
          Forgot password?
        </button>
      </div>
      <ProviderButtons auth={auth} />
    </Form>
  );
}

/** A code of the authenticator app, or (instead) one of the recovery codes. */
function FactorFields({
  proof,
  onChange,
}: {
  proof: FactorProof;
  onChange: (proof: FactorProof) => void;
}) {
  const recovery = "recovery_code" in proof;
  return (
    <>
      {recovery ? (
        <Field
          label="Recovery code"
          autoComplete="off"
          value={proof.recovery_code}
          onChange={(value) => { onChange({ recovery_code: value.trim() }); }}
        />
      ) : (
        <Field
          label="Code from your authenticator app"
          autoComplete="one-time-code"
          inputMode="numeric"
          value={proof.code}
          onChange={(value) => { onChange({ code: value.replace(/\s/g, "") }); }}
        />
      )}
      <button
        type="button"
        className="link"
        onClick={() => { onChange(recovery ? { code: "" } : { recovery_code: "" }); }}
      >
        {recovery ? "Use a code from the app" : "Use a recovery code instead"}
      </button>
    </>
  );
}

/** The second step of a sign-in, after the password (or a provider) was good. */
function SecondStepForm({ auth, step, onCancel }: { auth: AuthClient; step: SecondStep; onCancel: () => void }) {
  const [proof, setProof] = useState<FactorProof>({ code: "" });
  const [busy, outcome, run] = useAction();
  return (
    <Form
      title="Second step"
      onSubmit={() => {
        run(async () => {
          await auth.completeSignIn(step, proof);
          return null;
        });
      }}
    >
      <p>Enter the code your authenticator app shows for this account.</p>
      <FactorFields proof={proof} onChange={setProof} />
      <Result outcome={outcome} />
      <div className="actions">
        <button type="submit" disabled={busy}>Continue</button>
        {step.factors.includes("passkey") && (
          <button
            type="button"
            disabled={busy}
            onClick={() => {
              run(async () => {
                await auth.completeSignInWithPasskey(step);
                return null;
              });
            }}
          >
            Use a passkey instead
          </button>
        )}
        <button type="button" className="link" onClick={onCancel}>
          Start over
        </button>
      </div>
    </Form>
  );
}

/** The otpauth URI as a QR code, drawn on a canvas (no data: URL: the page's policy allows none). */
function QrCode({ text, label }: { text: string; label: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    if (canvas.current !== null) void QRCode.toCanvas(canvas.current, text, { margin: 2, width: 200 });
  }, [text]);
  return <canvas ref={canvas} role="img" aria-label={label} />;
}

/** Recovery codes, shown once. */
function RecoveryCodes({ codes }: { codes: string[] }) {
  return (
    <>
      <p>
        Your recovery codes. Each signs in once when your phone is not at hand. Keep them somewhere safe: they are not
        shown again.
      </p>
      <ul className="recovery-codes" aria-label="Recovery codes">
        {codes.map((code) => (
          <li key={code}>
            <code>{code}</code>
          </li>
        ))}
      </ul>
    </>
  );
}

/**
 * The second factor: set one up (a QR code or the key for the app, then a
 * code from it); with one, new recovery codes or its removal (the password
 * and a code each).
 */
function SecondFactor({
  auth,
  methods,
  passkey,
  onChange,
}: {
  auth: AuthClient;
  methods: Identities;
  /** The account has a passkey: setting up a code factor beside it proves one. */
  passkey: boolean;
  onChange: () => void;
}) {
  const [password, setPassword] = useState("");
  const [enrolment, setEnrolment] = useState<Enrolment | null>(null);
  const [code, setCode] = useState("");
  const [proof, setProof] = useState<FactorProof>({ code: "" });
  const [codes, setCodes] = useState<string[] | null>(null);
  const [busy, outcome, run] = useAction();
  const headingId = useId();
  const proofOfPassword = methods.has_password ? password : null;
  const passwordField = methods.has_password && (
    <Field
      label="Password (to change the second factor)"
      type="password"
      autoComplete="current-password"
      value={password}
      onChange={setPassword}
    />
  );
  let body: ReactNode;
  if (codes !== null) {
    body = (
      <>
        <RecoveryCodes codes={codes} />
        <div className="actions">
          <button type="button" onClick={() => { setCodes(null); }}>
            I have saved them
          </button>
        </div>
      </>
    );
  } else if (enrolment !== null) {
    body = (
      <form
        aria-label="Confirm the second factor"
        onSubmit={(event) => {
          event.preventDefault();
          run(async () => {
            const recovery = await auth.confirmSecondFactor(code);
            setEnrolment(null);
            setCode("");
            setCodes(recovery);
            onChange();
            return "Second factor on: every sign-in now asks for a code.";
          });
        }}
      >
        <p>Scan this with your authenticator app, then enter the code it shows.</p>
        <QrCode text={enrolment.otpauth_uri} label="QR code for your authenticator app" />
        <p>
          Or type this key into the app: <code className="secret">{enrolment.secret}</code>
        </p>
        <Field label="Code from your authenticator app" autoComplete="one-time-code" inputMode="numeric" value={code} onChange={(v) => { setCode(v.replace(/\s/g, "")); }} />
        <div className="actions">
          <button type="submit" disabled={busy}>Turn on</button>
          <button type="button" className="link" onClick={() => { setEnrolment(null); setCode(""); }}>
            Cancel
          </button>
        </div>
      </form>
    );
  } else if (!methods.second_factor) {
    body = (
      <form
        aria-label="Set up a second factor"
        onSubmit={(event) => {
          event.preventDefault();
          run(async () => {
            setEnrolment(
              await auth.beginSecondFactor(passkey ? "passkey" : { password: proofOfPassword, factor: null }),
            );
            setPassword("");
            return null;
          });
        }}
      >
        <p>Off. With a second factor, a stolen password alone does not sign in: each sign-in also asks for a code from an app on your phone.</p>
        {passkey ? <p>You will confirm with one of your passkeys first.</p> : passwordField}
        <div className="actions">
          <button type="submit" disabled={busy}>Set up a second factor</button>
        </div>
      </form>
    );
  } else {
    const act = (work: () => Promise<string>) => {
      run(async () => {
        const done = await work();
        setPassword("");
        setProof({ code: "" });
        return done;
      });
    };
    body = (
      <form aria-label="Manage the second factor" onSubmit={(event) => { event.preventDefault(); }}>
        <p>On: every sign-in asks for a code from your authenticator app.</p>
        {passwordField}
        <FactorFields proof={proof} onChange={setProof} />
        <div className="actions">
          <button
            type="button"
            disabled={busy}
            onClick={() => {
              act(async () => {
                setCodes(await auth.newRecoveryCodes(proofOfPassword, proof));
                return "New recovery codes: the old ones no longer work.";
              });
            }}
          >
            New recovery codes
          </button>
          <button
            type="button"
            className="danger"
            disabled={busy}
            onClick={() => {
              act(async () => {
                await auth.removeSecondFactor(proofOfPassword, proof);
                onChange();
                return "Second factor removed: the password alone signs in again.";
              });
            }}
          >
            Remove the second factor
          </button>
        </div>
      </form>
    );
  }
  return (
    <section aria-labelledby={headingId}>
      <h2 id={headingId}>Second factor</h2>
      {body}
      <Result outcome={outcome} />
    </section>
  );
}

/**
 * What `load` answers, into `set`, at mount and whenever `version` changes;
 * an answer that arrives after the view is gone (or reloading) is dropped.
 * A failure leaves the value as it was.
 */
function useLoad<T>(load: () => Promise<T>, set: (value: T) => void, version: unknown): void {
  useEffect(() => {
    let current = true;
    load()
      .then((value) => {
        if (current) set(value);
      })
      .catch(() => undefined);
    return () => {
      current = false;
    };
    // `load` and `set` are made anew at each render; `version` says when to load again.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [version]);
}

/** The outside identity providers this service is configured with. */
function useProviders(auth: AuthClient): Provider[] {
  const [providers, setProviders] = useState<Provider[]>([]);
  useLoad(() => auth.providers(), setProviders, auth);
  return providers;
}

/** "Sign in with …": a first sign-in makes an account, the next ones sign in to it. */
function ProviderButtons({ auth }: { auth: AuthClient }) {
  const providers = useProviders(auth);
  const [busy, outcome, run] = useAction();
  if (providers.length === 0) return null;
  return (
    <div className="providers">
      <p>Or use an account you have elsewhere:</p>
      <div className="actions">
        {providers.map((provider) => (
          <button
            type="button"
            key={provider.id}
            disabled={busy}
            onClick={() => {
              run(async () => {
                await auth.signInWith(provider.id);
                return null;
              });
            }}
          >
            Sign in with {provider.name}
          </button>
        ))}
      </div>
      <Result outcome={outcome} />
    </div>
  );
}

/**
 * A forgotten password: a username or an address, then the mailed code and
 * a new password (the mailed link leads to `ResetWithLink` instead). The
 * answer is the same whoever was named, and so is what the page says.
 */
function ForgotPassword({ auth, onDone }: { auth: AuthClient; onDone: () => void }) {
  const [who, setWho] = useState("");
  const [asked, setAsked] = useState<string | null>(null);
  const [code, setCode] = useState("");
  const [next, setNext] = useState("");
  const [busy, outcome, run] = useAction();
  if (asked === null) {
    return (
      <Form
        title="Reset your password"
        onSubmit={() => {
          run(async () => {
            setAsked(await auth.requestReset(identifier(who)));
            return null;
          });
        }}
      >
        <p>We mail a link and a code to the account&apos;s verified email address.</p>
        <Field label="Username or email" autoComplete="username" value={who} onChange={setWho} />
        <Result outcome={outcome} />
        <div className="actions">
          <button type="submit" disabled={busy}>Send reset email</button>
          <button type="button" className="link" onClick={onDone}>Back to log in</button>
        </div>
      </Form>
    );
  }
  return (
    <Form
      title="Enter the code from the email"
      onSubmit={() => {
        run(async () => {
          await auth.confirmReset({ ...identifier(who), code }, next);
          setCode("");
          setNext("");
          return "Your password is reset and every session was signed out. Log in with the new password.";
        });
      }}
    >
      <p className="notice">{asked} Open its link, or type its code here.</p>
      <Field label="Code from the email" autoComplete="one-time-code" inputMode="numeric" value={code} onChange={setCode} />
      <Field label="New password" type="password" autoComplete="new-password" value={next} onChange={setNext} />
      <Result outcome={outcome} />
      <div className="actions">
        <button type="submit" disabled={busy}>Set new password</button>
        <button type="button" className="link" onClick={onDone}>Back to log in</button>
      </div>
    </Form>
  );
}

/**
 * The page opened from a reset link: opening it changes nothing (a mail
 * scanner may open it too); only this form's submission, with a new
 * password, uses the link.
 */
function ResetWithLink({ auth, token, onDone }: { auth: AuthClient; token: string; onDone: () => void }) {
  const [next, setNext] = useState("");
  const [done, setDone] = useState(false);
  const [busy, outcome, run] = useAction();
  return (
    <Form
      title="Choose a new password"
      onSubmit={() => {
        run(async () => {
          await auth.confirmReset({ token }, next);
          setNext("");
          setDone(true);
          return "Your password is reset and every session was signed out. Log in with the new password.";
        });
      }}
    >
      <Field label="New password" type="password" autoComplete="new-password" value={next} onChange={setNext} />
      <Result outcome={outcome} />
      <div className="actions">
        {!done && <button type="submit" disabled={busy}>Set new password</button>}
        <button type="button" className="link" onClick={onDone}>{done ? "Go to log in" : "Cancel"}</button>
      </div>
    </Form>
  );
}

/** The page opened from a verification link: a button confirms it (opening changes nothing). */
function VerifyWithLink({ auth, token, onDone }: { auth: AuthClient; token: string; onDone: () => void }) {
  const [done, setDone] = useState(false);
  const [busy, outcome, run] = useAction();
  return (
    <Form
      title="Confirm your email address"
      onSubmit={() => {
        run(async () => {
          const view = await auth.verifyEmailLink(token);
          setDone(true);
          return `${view.email ?? "The address"} is verified: password resets and security notices go to it.`;
        });
      }}
    >
      <Result outcome={outcome} />
      <div className="actions">
        {!done && <button type="submit" disabled={busy}>Confirm this address</button>}
        <button type="button" className="link" onClick={onDone}>{done ? "Continue" : "Cancel"}</button>
      </div>
    </Form>
  );
}

/** The signed-in user's address: give one (with the password), verify it by code, remove it. */
function Email({ auth }: { auth: AuthClient }) {
  const [view, setView] = useState<EmailView | null>(null);
  const [address, setAddress] = useState("");
  const [password, setPassword] = useState("");
  const [code, setCode] = useState("");
  const [busy, outcome, run] = useAction();
  useLoad(() => auth.email(), setView, auth);
  const headingId = useId();
  return (
    <section aria-labelledby={headingId}>
      <h2 id={headingId}>Email address</h2>
      <p>
        {view?.email != null
          ? `Verified: ${view.email}. Password resets and security notices go to it.`
          : "No verified address: a forgotten password cannot be reset."}
        {view?.email_pending != null && ` Waiting for verification: ${view.email_pending}.`}
      </p>
      {view?.email_pending != null && (
        <form
          aria-label="Verify the address"
          onSubmit={(event) => {
            event.preventDefault();
            run(async () => {
              setView(await auth.verifyEmailCode(code));
              setCode("");
              return "Address verified.";
            });
          }}
        >
          <Field label="Code from the email" autoComplete="one-time-code" inputMode="numeric" value={code} onChange={setCode} />
          <div className="actions">
            <button type="submit" disabled={busy}>Verify</button>
          </div>
        </form>
      )}
      <form
        aria-label="Change the address"
        onSubmit={(event) => {
          event.preventDefault();
          run(async () => {
            setView(await auth.setEmail(address, password));
            setAddress("");
            setPassword("");
            return "A link and a code are on their way to the address. It replaces the verified one once verified.";
          });
        }}
      >
        <Field label="New email address" type="email" autoComplete="email" value={address} onChange={setAddress} />
        <Field label="Password (to change the address)" type="password" autoComplete="current-password" value={password} onChange={setPassword} />
        <div className="actions">
          <button type="submit" disabled={busy}>Save address</button>
        </div>
      </form>
      <Result outcome={outcome} />
    </section>
  );
}

/**
 * The ways the account signs in: its providers (connect, disconnect) and,
 * for an account without a password, a fresh proof at one of them.
 */
function SignInMethods({
  auth,
  methods,
  onChange,
  returned,
}: {
  auth: AuthClient;
  methods: Identities | null;
  onChange: () => void;
  returned: ProviderOutcome | null;
}) {
  const providers = useProviders(auth);
  const [password, setPassword] = useState("");
  const [busy, outcome, run] = useAction();
  const headingId = useId();
  if (methods === null || (providers.length === 0 && methods.identities.length === 0)) return null;
  const connected = new Set(methods.identities.map((i) => i.provider));
  // An empty field asks nothing of the API: it answers what it needs.
  const proof = methods.has_password && password !== "" ? password : null;
  const back =
    returned === null || returned.kind === "second-step"
      ? null
      : returned.kind === "error"
        ? { kind: "error" as const, text: providerProblem(returned.code) }
        : returned.kind === "connected"
          ? { kind: "done" as const, text: `Connected: you can now sign in with ${nameOf(providers, returned.provider)}.` }
          : {
              kind: "done" as const,
              text: `Confirmed with ${nameOf(providers, returned.provider)}: for the next few minutes you can change what needs a recent sign-in.`,
            };
  return (
    <section aria-labelledby={headingId}>
      <h2 id={headingId}>Sign-in methods</h2>
      <p>{methods.has_password ? "This account has a password." : "This account has no password: it signs in with a provider."}</p>
      <ul className="identities">
        {methods.identities.map((identity) => (
          <li key={identity.issuer}>
            {identity.name ?? identity.issuer}
            {identity.connected_at !== null && <>, connected on {when(identity.connected_at)}</>}
            {identity.provider !== null && (
              <button
                type="button"
                disabled={busy}
                onClick={() => {
                  const id = identity.provider ?? "";
                  run(async () => {
                    await auth.disconnect(id, proof);
                    setPassword("");
                    onChange();
                    return `Disconnected ${identity.name ?? id}.`;
                  });
                }}
              >
                Disconnect {identity.name}
              </button>
            )}
          </li>
        ))}
      </ul>
      {methods.has_password && (
        <Field
          label="Password (to connect or disconnect a provider)"
          type="password"
          autoComplete="current-password"
          value={password}
          onChange={setPassword}
          optional
        />
      )}
      <div className="actions">
        {providers
          .filter((p) => !connected.has(p.id))
          .map((p) => (
            <button
              type="button"
              key={p.id}
              disabled={busy}
              onClick={() => {
                run(async () => {
                  await auth.connectProvider(p.id, proof);
                  return null;
                });
              }}
            >
              Connect {p.name}
            </button>
          ))}
        {!methods.has_password &&
          providers
            .filter((p) => connected.has(p.id))
            .map((p) => (
              <button
                type="button"
                key={p.id}
                disabled={busy}
                onClick={() => {
                  run(async () => {
                    await auth.reauthenticateWith(p.id);
                    return null;
                  });
                }}
              >
                Confirm it&apos;s you with {p.name}
              </button>
            ))}
      </div>
      <Result outcome={outcome ?? back} />
    </section>
  );
}

function nameOf(providers: Provider[], id: string): string {
  return providers.find((p) => p.id === id)?.name ?? id;
}

/** An account without a password sets its first (after a fresh proof at its provider). */
function SetPassword({ auth, onDone }: { auth: AuthClient; onDone: () => void }) {
  const [next, setNext] = useState("");
  const [busy, outcome, run] = useAction();
  return (
    <Form
      title="Set a password"
      onSubmit={() => {
        run(async () => {
          await auth.setPassword(next);
          setNext("");
          onDone();
          return "Password set: you can now also log in with your username and this password.";
        });
      }}
    >
      <p>Confirm it&apos;s you with your provider first (above), then choose a password.</p>
      <Field label="New password" type="password" autoComplete="new-password" value={next} onChange={setNext} />
      <Result outcome={outcome} />
      <div className="actions">
        <button type="submit" disabled={busy}>Set password</button>
      </div>
    </Form>
  );
}

function ChangePassword({ auth }: { auth: AuthClient }) {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [busy, outcome, run] = useAction();
  return (
    <Form
      title="Change password"
      onSubmit={() => {
        run(async () => {
          await auth.changePassword(current, next);
          setCurrent("");
          setNext("");
          return "Password changed. Your other devices have been signed out.";
        });
      }}
    >
      <Field label="Current password" type="password" autoComplete="current-password" value={current} onChange={setCurrent} />
      <Field label="New password" type="password" autoComplete="new-password" value={next} onChange={setNext} />
      <Result outcome={outcome} />
      <div className="actions">
        <button type="submit" disabled={busy}>Change password</button>
      </div>
    </Form>
  );
}

/**
 * The account's passkeys: each with its name, when it was added and last
 * used, and whether it is synced; rename, remove, add. Adding and removing
 * need a fresh proof: one of the passkeys (one touch), or, for an account
 * with none yet, the password (and the app's code, where it has one). An
 * account with a code factor may use the password and a code instead of a
 * passkey, for when the device that holds them is lost.
 */
function Passkeys({
  auth,
  passkeys,
  methods,
  onChange,
}: {
  auth: AuthClient;
  passkeys: PasskeyInfo[];
  methods: Identities;
  onChange: () => void;
}) {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [proof, setProof] = useState<FactorProof>({ code: "" });
  const [renaming, setRenaming] = useState<PasskeyInfo | null>(null);
  const [newName, setNewName] = useState("");
  const [withCode, setWithCode] = useState(false);
  const [busy, outcome, run] = useAction();
  const headingId = useId();
  const first = passkeys.length === 0;
  // The proof asked before adding or removing one.
  const byCode = first || withCode;
  const fresh = (): FreshProof =>
    byCode
      ? { password: methods.has_password ? password : null, factor: methods.second_factor ? proof : null }
      : "passkey";
  return (
    <section aria-labelledby={headingId}>
      <h2 id={headingId}>Passkeys</h2>
      <p>Sign in with your fingerprint, face or device PIN instead of a password: nothing to type, nothing to phish.</p>
      {first ? (
        <p>No passkeys yet.</p>
      ) : (
        <ul className="sessions">
          {passkeys.map((passkey) => (
            <li key={passkey.id} aria-label={`Passkey ${passkey.name}`}>
              <p>
                <strong>{passkey.name}</strong> · {passkey.synced ? "Synced to your other devices" : "On one device only"}
              </p>
              <p>
                Added {when(passkey.created_at)}.{" "}
                {passkey.last_used === null ? "Not used yet." : `Last used ${when(passkey.last_used)}.`}
              </p>
              <div className="actions">
                <button
                  type="button"
                  disabled={busy}
                  onClick={() => {
                    setRenaming(passkey);
                    setNewName(passkey.name);
                  }}
                >
                  Rename {passkey.name}
                </button>
                <button
                  type="button"
                  className="danger"
                  disabled={busy}
                  onClick={() => {
                    run(async () => {
                      await auth.removePasskey(passkey.id, fresh());
                      setPassword("");
                      setProof({ code: "" });
                      onChange();
                      return `Passkey “${passkey.name}” removed: it signs in no more.`;
                    });
                  }}
                >
                  Remove {passkey.name}
                </button>
              </div>
            </li>
          ))}
        </ul>
      )}
      {!first && methods.second_factor && !withCode && (
        <p>
          Lost the device that holds your passkeys?{" "}
          <button type="button" className="link" onClick={() => { setWithCode(true); }}>
            Confirm with your password and a code instead
          </button>
        </p>
      )}
      {!first && withCode && (
        <div role="group" aria-label="Confirm with your password and a code">
          <p>To add or remove a passkey, confirm with your password and a code.</p>
          {methods.has_password && (
            <Field
              label="Password (to add or remove a passkey)"
              type="password"
              autoComplete="current-password"
              value={password}
              onChange={setPassword}
            />
          )}
          <FactorFields proof={proof} onChange={setProof} />
          <div className="actions">
            <button type="button" className="link" onClick={() => { setWithCode(false); }}>
              Confirm with a passkey instead
            </button>
          </div>
        </div>
      )}
      {renaming !== null && (
        <Form
          title={`Rename “${renaming.name}”`}
          onSubmit={() => {
            run(async () => {
              const renamed = await auth.renamePasskey(renaming.id, newName);
              setRenaming(null);
              onChange();
              return `Renamed to “${renamed.name}”.`;
            });
          }}
        >
          <Field label="New name" autoComplete="off" value={newName} onChange={setNewName} />
          <div className="actions">
            <button type="submit" disabled={busy}>Save the name</button>
            <button type="button" className="link" onClick={() => { setRenaming(null); }}>
              Keep the name
            </button>
          </div>
        </Form>
      )}
      <Form
        title="Add a passkey"
        onSubmit={() => {
          run(async () => {
            const added = await auth.addPasskey(name, fresh());
            setName("");
            setPassword("");
            setProof({ code: "" });
            onChange();
            return `Passkey “${added.name}” added: use it at your next sign-in.`;
          });
        }}
      >
        <Field label="Name for the new passkey" autoComplete="off" value={name} onChange={setName} />
        {first && methods.has_password && (
          <Field
            label="Password (to add a passkey)"
            type="password"
            autoComplete="current-password"
            value={password}
            onChange={setPassword}
          />
        )}
        {first && methods.second_factor && <FactorFields proof={proof} onChange={setProof} />}
        {!byCode && <p>You will confirm with one of your passkeys first.</p>}
        <div className="actions">
          <button type="submit" disabled={busy}>Add a passkey</button>
        </div>
      </Form>
      <Result outcome={outcome} />
    </section>
  );
}

function DeleteAccount({
  auth,
  hasPassword,
  secondFactor,
  passkey,
}: {
  auth: AuthClient;
  hasPassword: boolean;
  secondFactor: boolean;
  /** The account has a passkey: it proves the second factor. */
  passkey: boolean;
}) {
  const [asked, setAsked] = useState(false);
  const [password, setPassword] = useState("");
  const [proof, setProof] = useState<FactorProof>({ code: "" });
  // An account with a passkey and a code factor: the code, its device lost.
  const [withCode, setWithCode] = useState(false);
  const [busy, outcome, run] = useAction();
  if (!asked) {
    return (
      <section aria-labelledby="delete-account">
        <h2 id="delete-account">Delete account</h2>
        <div className="actions">
          <button type="button" className="danger" onClick={() => { setAsked(true); }}>
            Delete account…
          </button>
        </div>
      </section>
    );
  }
  return (
    <Form
      title="Delete account"
      onSubmit={() => {
        run(async () => {
          await auth.deleteAccount(
            hasPassword ? password : null,
            passkey && !withCode ? "passkey" : secondFactor ? proof : null,
          );
          return null;
        });
      }}
    >
      <p>This deletes your account and ends every session, on every device. It cannot be undone.</p>
      {hasPassword ? (
        <Field label="Password" type="password" autoComplete="current-password" value={password} onChange={setPassword} />
      ) : (
        <p>Confirm it&apos;s you with your provider first (above).</p>
      )}
      {passkey && !withCode ? (
        <p>
          You will confirm with one of your passkeys.
          {secondFactor && (
            <>
              {" "}
              <button type="button" className="link" onClick={() => { setWithCode(true); }}>
                Confirm with a code instead
              </button>
            </>
          )}
        </p>
      ) : (
        secondFactor && <FactorFields proof={proof} onChange={setProof} />
      )}
      <Result outcome={outcome} />
      <div className="actions">
        <button type="submit" className="danger" disabled={busy}>Delete my account</button>
        <button type="button" className="link" onClick={() => { setAsked(false); setPassword(""); }}>
          Keep my account
        </button>
      </div>
    </Form>
  );
}

/** A moment as a person reads it, in their own locale and time zone. */
function when(seconds: number): string {
  return new Date(seconds * 1000).toLocaleString();
}

const METHODS: Record<SessionInfo["method"], string> = {
  password: "Signed in with the password",
  password_change: "Began with a password change",
  provider: "Signed in with a provider",
  passkey: "Signed in with a passkey",
  other: "Signed in",
};

/** The user's sessions: where and when each began, last use, and a way to end any other. */
function Sessions({ auth }: { auth: AuthClient }) {
  const [sessions, setSessions] = useState<SessionInfo[] | null>(null);
  const [truncated, setTruncated] = useState(false);
  const [loadError, setLoadError] = useState<string | null>(null);
  // Bumped to read the list again.
  const [version, setVersion] = useState(0);
  const [busy, outcome, run] = useAction();
  useEffect(() => {
    let current = true;
    auth
      .sessions()
      .then((list) => {
        if (!current) return;
        setSessions(list.sessions);
        setTruncated(list.truncated);
        setLoadError(null);
      })
      .catch((error: unknown) => {
        if (current) setLoadError(describe(error));
      });
    return () => {
      current = false;
    };
  }, [auth, version]);
  const reload = () => {
    setVersion((v) => v + 1);
  };
  return (
    <section aria-labelledby="sessions">
      <h2 id="sessions">Your sessions</h2>
      {sessions !== null && (
        <ul className="sessions">
          {sessions.map((session) => (
            <li key={session.id} aria-label={session.current ? "This session" : `Session from ${when(session.created_at)}`}>
              {/* The client's own words, labelled as such: a User-Agent is whatever it says. */}
              <p>
                <strong>{session.current ? "This device" : "Another device"}</strong>
                {session.user_agent !== null && <> · Client: {session.user_agent}</>}
              </p>
              <p>
                {METHODS[session.method]} on {when(session.created_at)}
                {session.ip !== null && <> from {session.ip}</>}
                {session.known_device && <> on a device that had signed in before</>}. Last used{" "}
                {when(session.last_used_at)}.
              </p>
              {!session.current && (
                <button
                  type="button"
                  disabled={busy}
                  onClick={() => {
                    run(async () => {
                      await auth.endSession(session.id);
                      reload();
                      return "That session has ended.";
                    });
                  }}
                >
                  End session from {when(session.created_at)}
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
      {truncated && (
        <p className="notice">
          Only your newest sessions are listed. “Log out everywhere” ends every one of them.
        </p>
      )}
      {loadError !== null && <p role="alert" className="error">{loadError}</p>}
      <Result outcome={outcome} />
      <div className="actions">
        <button type="button" className="link" disabled={busy} onClick={reload}>
          Refresh the list
        </button>
      </div>
    </section>
  );
}

function Account({ auth, returned }: { auth: AuthClient; returned: ProviderOutcome | null }) {
  const [name, setName] = useState<string | null>(null);
  const [nameError, setNameError] = useState<string | null>(null);
  const [busy, outcome, run] = useAction();
  const [methods, setMethods] = useState<Identities | null>(null);
  // Bumped to read the sign-in methods again.
  const [methodsVersion, setMethodsVersion] = useState(0);
  useLoad(() => auth.identities(), setMethods, methodsVersion);
  const [passkeys, setPasskeys] = useState<PasskeyInfo[] | null>(null);
  const [passkeysVersion, setPasskeysVersion] = useState(0);
  useLoad(() => auth.passkeys(), setPasskeys, passkeysVersion);
  const reloadMethods = () => {
    setMethodsVersion((v) => v + 1);
  };

  useEffect(() => {
    let current = true;
    auth
      .fetch("/get_name")
      .then(async (response) => {
        if (!response.ok) throw await problem(response);
        const body = (await response.json()) as { name: string };
        if (current) setName(body.name);
      })
      .catch((error: unknown) => {
        if (current) setNameError(describe(error));
      });
    return () => {
      current = false;
    };
  }, [auth]);

  return (
    <>
      <section aria-labelledby="welcome">
        <h2 id="welcome">{name === null ? "Signed in" : `Hello, ${name}`}</h2>
        {nameError !== null && <p role="alert" className="error">{nameError}</p>}
        <div className="actions">
          <button type="button" disabled={busy} onClick={() => { run(async () => { await auth.logout(); return null; }); }}>
            Log out
          </button>
          <button
            type="button"
            disabled={busy}
            onClick={() => { run(async () => { await auth.logout({ everywhere: true }); return null; }); }}
          >
            Log out everywhere
          </button>
        </div>
        <Result outcome={outcome} />
      </section>
      <Sessions auth={auth} />
      <SignInMethods auth={auth} methods={methods} onChange={reloadMethods} returned={returned} />
      <Email auth={auth} />
      {methods?.has_password === false ? <SetPassword auth={auth} onDone={reloadMethods} /> : <ChangePassword auth={auth} />}
      {methods !== null && (
        <SecondFactor
          auth={auth}
          methods={methods}
          passkey={passkeys !== null && passkeys.length > 0}
          onChange={reloadMethods}
        />
      )}
      {methods !== null && passkeys !== null && (
        <Passkeys
          auth={auth}
          passkeys={passkeys}
          methods={methods}
          onChange={() => { setPasskeysVersion((v) => v + 1); }}
        />
      )}
      <DeleteAccount
        auth={auth}
        hasPassword={methods?.has_password !== false}
        secondFactor={methods?.second_factor === true}
        passkey={passkeys !== null && passkeys.length > 0}
      />
    </>
  );
}

export function App({ auth }: { auth: AuthClient }) {
  const state = useSyncExternalStore(auth.subscribe, () => auth.state);
  // A mailed link's secret, taken out of the address bar: at load, and when
  // a link is opened in this tab later (only the fragment changes).
  const [link, setLink] = useState(takeLinkSecret);
  // What a provider's round trip brought the page back with.
  const [returned, setReturned] = useState(takeProviderOutcome);
  // A provider's second step is used once: signed in (or started over), it
  // is gone, and a later sign-out shows the plain form.
  // (Set while rendering, as React allows for state derived from a change.)
  if (returned?.kind === "second-step" && state.status === "signed-in") setReturned(null);
  useEffect(() => {
    const opened = () => {
      const secret = takeLinkSecret();
      if (secret !== null) setLink(secret);
    };
    window.addEventListener("hashchange", opened);
    return () => {
      window.removeEventListener("hashchange", opened);
    };
  }, []);
  if (link !== null) {
    const onDone = () => { setLink(null); };
    return (
      <main>
        <h1>Auth demo</h1>
        {link.kind === "reset"
          ? <ResetWithLink auth={auth} token={link.token} onDone={onDone} />
          : <VerifyWithLink auth={auth} token={link.token} onDone={onDone} />}
      </main>
    );
  }
  return (
    <main>
      <h1>Auth demo</h1>
      {state.status === "loading" && (
        <>
          <p role="status">Checking your session…</p>
          {state.problem !== null && <p role="alert" className="error">{state.problem} Trying again shortly.</p>}
        </>
      )}
      {state.status === "signed-out" && (
        <SignIn
          auth={auth}
          notice={returned?.kind === "error" ? providerProblem(returned.code) : state.notice}
          pending={returned?.kind === "second-step" ? returned.step : null}
          onDropPending={() => { setReturned(null); }}
        />
      )}
      {/* A new user is a new view: their name is fetched anew. */}
      {state.status === "signed-in" && <Account key={state.user} auth={auth} returned={returned} />}
    </main>
  );
}
