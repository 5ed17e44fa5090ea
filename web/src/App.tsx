// The page: React renders, the auth module decides. Every input has a label,
// every button says what it does, and results are announced (role="status",
// role="alert") so the page works from the keyboard and a screen reader.

import { useEffect, useId, useState, useSyncExternalStore, type ReactNode } from "react";
import { describe, problem, type AuthClient, type SessionInfo } from "./auth";

type Outcome = { kind: "error" | "done"; text: string } | null;

/** Runs a form's action: the button is busy meanwhile, the outcome is shown. */
function useAction(): [boolean, Outcome, (work: () => Promise<string | null>) => void, () => void] {
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState<Outcome>(null);
  const run = (work: () => Promise<string | null>) => {
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
  };
  return [busy, outcome, run, () => { setOutcome(null); }];
}

function Field(props: { label: string; type?: string; autoComplete: string; value: string; onChange: (value: string) => void; minLength?: number }) {
  const id = useId();
  return (
    <div className="field">
      <label htmlFor={id}>{props.label}</label>
      <input
        id={id}
        name={props.autoComplete}
        type={props.type ?? "text"}
        autoComplete={props.autoComplete}
        value={props.value}
        required
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

function SignIn({ auth, notice }: { auth: AuthClient; notice: string | null }) {
  const [mode, setMode] = useState<"login" | "register">("login");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [name, setName] = useState("");
  const [busy, outcome, run, clear] = useAction();
  const switchTo = (next: "login" | "register") => {
    setMode(next);
    clear();
  };

  if (mode === "register") {
    return (
      <Form
        title="Create an account"
        onSubmit={() => {
          run(async () => {
            await auth.register(username, password, name);
            await auth.login(username, password);
            return null;
          });
        }}
      >
        <Field label="Username" autoComplete="username" value={username} onChange={setUsername} />
        <Field label="Password" type="password" autoComplete="new-password" value={password} onChange={setPassword} />
        <Field label="Name" autoComplete="name" value={name} onChange={setName} />
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
          await auth.login(username, password);
          return null;
        });
      }}
    >
      {notice !== null && outcome === null && <p className="notice">{notice}</p>}
      <Field label="Username" autoComplete="username" value={username} onChange={setUsername} />
      <Field label="Password" type="password" autoComplete="current-password" value={password} onChange={setPassword} />
      <Result outcome={outcome} />
      <div className="actions">
        <button type="submit" disabled={busy}>Log in</button>
        <button type="button" className="link" onClick={() => { switchTo("register"); }}>
          Create an account
        </button>
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

function DeleteAccount({ auth }: { auth: AuthClient }) {
  const [asked, setAsked] = useState(false);
  const [password, setPassword] = useState("");
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
          await auth.deleteAccount(password);
          return null;
        });
      }}
    >
      <p>This deletes your account and ends every session, on every device. It cannot be undone.</p>
      <Field label="Password" type="password" autoComplete="current-password" value={password} onChange={setPassword} />
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

function Account({ auth }: { auth: AuthClient }) {
  const [name, setName] = useState<string | null>(null);
  const [nameError, setNameError] = useState<string | null>(null);
  const [busy, outcome, run] = useAction();

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
      <ChangePassword auth={auth} />
      <DeleteAccount auth={auth} />
    </>
  );
}

export function App({ auth }: { auth: AuthClient }) {
  const state = useSyncExternalStore(auth.subscribe, () => auth.state);
  return (
    <main>
      <h1>Auth demo</h1>
      {state.status === "loading" && (
        <>
          <p role="status">Checking your session…</p>
          {state.problem !== null && <p role="alert" className="error">{state.problem} Trying again shortly.</p>}
        </>
      )}
      {state.status === "signed-out" && <SignIn auth={auth} notice={state.notice} />}
      {/* A new user is a new view: their name is fetched anew. */}
      {state.status === "signed-in" && <Account key={state.user} auth={auth} />}
    </main>
  );
}
