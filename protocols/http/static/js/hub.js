// The websocket hub client (docs/protocol.md): login, subscription, commands, reconnects.
//
// Theory of operation
// -------------------
// One socket at a time. After it opens, the client says `hello` (with the session token once
// it has one, else with the password it was given for this one login), waits for `welcome`,
// then sends its subscription again; the server answers with a fresh snapshot, so nothing
// missed while disconnected stays missed. A lost socket is reopened after a backoff
// (0.5 s doubling to 10 s, with jitter so a control room does not reconnect in lockstep).
// The password is forgotten as soon as `welcome` gives a token (kept in sessionStorage: a
// reload or a reconnect logs in again with it; closing the tab ends it).
//
// Commands carry a random id; until their answer comes they stay pending, and a reconnect
// sends them again with the same id. The server applies a repeated id once and answers the
// repeat as it did the first, so a command sent just before a connection dropped is neither
// lost nor doubled. A command unanswered for COMMAND_TIMEOUT_MS fails with "timeout".
//
// A socket that goes quiet (no frame for SILENCE_MS, though we ping every PING_MS) is closed
// and reopened: a half-open connection would otherwise look live forever.
//
// Events (EventTarget): "state" {state, retryMs}, "welcome" {user, role}, "messages"
// {messages: [...], snapshot: bool}, "snapshot" (after snapshot_done), "denied" {reason:
// "wrong" | "expired"}.

const TOKEN_KEY = "wattkeeper.session";
const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 10_000;
const COMMAND_TIMEOUT_MS = 30_000;
const PING_MS = 15_000;
const SILENCE_MS = 40_000;

export function randomId() {
  // crypto.randomUUID needs a secure context; getRandomValues works over plain http too.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class CommandError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

export class HubClient extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this.state = "idle";
    this.user = null;
    this.role = null;
    this.subscriptionFor = null;
    this.pending = new Map(); // id -> {frame, resolve, reject, timer}
    this.password = null;
    this.loginUser = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastFrameAt = 0;
    this.wanted = false; // whether we want to be connected (false after logout)
    this.welcomed = false;
    this.snapshotId = null;
  }

  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  hasSession() {
    return Boolean(this.token);
  }

  login(user, password) {
    this.loginUser = user;
    this.password = password;
    sessionStorage.removeItem(TOKEN_KEY);
    this.start();
  }

  resume() {
    this.password = null;
    this.start();
  }

  logout() {
    this.wanted = false;
    sessionStorage.removeItem(TOKEN_KEY);
    this.password = null;
    this.failPending("offline");
    this.close();
    this.setState("idle");
  }

  start() {
    this.wanted = true;
    this.attempt = 0;
    this.close();
    this.open();
  }

  setState(state, retryMs = 0) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, retryMs } }));
  }

  open() {
    clearTimeout(this.retryTimer);
    this.welcomed = false;
    this.setState(this.attempt ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (error) {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.lastFrameAt = performance.now();
      const token = this.token;
      if (token) this.sendNow({ type: "hello", token });
      else if (this.password !== null) {
        this.sendNow({ type: "hello", user: this.loginUser, password: this.password });
      } else {
        this.deny("expired");
      }
    };
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      if (this.wanted) this.scheduleRetry();
      else this.setState("idle");
    };
    ws.onerror = () => {}; // onclose follows and decides
  }

  close() {
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.close();
    }
  }

  scheduleRetry() {
    const base = Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    this.setState("reconnecting", delay);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  deny(reason) {
    this.wanted = false;
    sessionStorage.removeItem(TOKEN_KEY);
    this.password = null;
    this.failPending("unauthorized");
    this.close();
    this.setState("idle");
    this.dispatchEvent(new CustomEvent("denied", { detail: { reason } }));
  }

  sendNow(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  // What to subscribe to, asked again after every welcome (it may depend on the role).
  setSubscription(subscriptionFor) {
    this.subscriptionFor = subscriptionFor;
    if (this.welcomed) this.sendSubscription();
  }

  sendSubscription() {
    if (!this.subscriptionFor) return;
    this.snapshotId = randomId();
    this.sendNow({
      type: "subscribe", id: this.snapshotId, ...this.subscriptionFor(this.role), batch: true,
    });
  }

  command(type, fields) {
    const id = randomId();
    const frame = { type, id, ...fields };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new CommandError("timeout"));
      }, COMMAND_TIMEOUT_MS);
      this.pending.set(id, { frame, resolve, reject, timer });
      if (this.welcomed) this.sendNow(frame);
    });
  }

  failPending(code) {
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(new CommandError(code));
      this.pending.delete(id);
    }
  }

  receive(data) {
    this.lastFrameAt = performance.now();
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.type === "batch") {
      this.deliver(message.messages || []);
    } else {
      this.deliver([message]);
    }
  }

  deliver(messages) {
    const updates = [];
    for (const message of messages) {
      switch (message.type) {
        case "welcome":
          this.onWelcome(message);
          break;
        case "error":
          if (!this.onError(message)) updates.push(message);
          break;
        case "ack":
        case "audit_page":
        case "report":
        case "quotas":
        case "quota":
        case "output":
        case "notices":
        case "notice_retry":
        case "pong":
          this.answer(message);
          break;
        case "snapshot_done":
          if (updates.length) this.emitMessages(updates.splice(0));
          if (message.id === this.snapshotId) {
            this.dispatchEvent(new CustomEvent("snapshot"));
          }
          break;
        default:
          updates.push(message);
      }
    }
    if (updates.length) this.emitMessages(updates);
  }

  emitMessages(messages) {
    this.dispatchEvent(new CustomEvent("messages", { detail: { messages } }));
  }

  onWelcome(message) {
    this.welcomed = true;
    this.attempt = 0;
    this.password = null;
    if (message.token) sessionStorage.setItem(TOKEN_KEY, message.token);
    this.user = message.user;
    this.role = message.role;
    this.setState("online");
    this.dispatchEvent(new CustomEvent("welcome", { detail: { user: this.user, role: this.role } }));
    this.sendSubscription();
    for (const pending of this.pending.values()) this.sendNow(pending.frame);
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => this.keepAlive(), PING_MS);
  }

  keepAlive() {
    if (performance.now() - this.lastFrameAt > SILENCE_MS) {
      const ws = this.ws;
      if (ws) ws.close(); // onclose reconnects
      return;
    }
    this.sendNow({ type: "ping", id: "keepalive" });
  }

  // Returns true when the error was an answer (or a login refusal) handled here.
  onError(message) {
    if (!this.welcomed && message.code === "unauthorized") {
      this.deny(this.token ? "expired" : "wrong");
      return true;
    }
    if (message.id !== null && message.id !== undefined && this.pending.has(message.id)) {
      this.answer(message);
      return true;
    }
    return message.id === "keepalive";
  }

  answer(message) {
    const pending = this.pending.get(message.id);
    if (!pending) return;
    this.pending.delete(message.id);
    clearTimeout(pending.timer);
    if (message.type === "error") pending.reject(new CommandError(message.code, message.message));
    else pending.resolve(message);
  }
}
