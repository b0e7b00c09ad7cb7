/* msc web console (docs/WEB.md). Plain JavaScript, served by msc itself: no framework, no CDN,
   no build step. Nothing is kept in browser storage: what the page shows lives in this page's
   memory, and a reload asks the server again. Every state change sends the CSRF token in the
   x-csrftoken header. */
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, "");
    else if (v !== false && v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};

const state = { csrf: "", console: null, forms: [], form: null, ws: null, outputs: new Map(), requests: new Map(),
                hits: [], lastActivity: 0, inboxIndex: 0 };

async function api(path, body, method = "POST") {
  const opts = { method, headers: { "x-csrftoken": state.csrf }, credentials: "same-origin" };
  if (method !== "GET") { opts.headers["content-type"] = "application/json"; opts.body = JSON.stringify(body || {}); }
  const r = await fetch(path, opts);
  let data = {};
  try { data = await r.json(); } catch (e) { data = { error: `HTTP ${r.status}` }; }
  if (r.status === 401 && state.console) { ended(data.ended || "SESSION ENDED"); }
  return { ok: r.ok, status: r.status, data };
}

function show(view) {
  for (const v of document.querySelectorAll("main > section")) v.hidden = v.id !== view;
  const loggedOn = ["operator-view", "investigator-view", "admin-view"].includes(view);
  $("#logoff").hidden = !loggedOn;
  $("#help-button").hidden = !loggedOn;
}

async function boot() {
  const { data } = await api("/api/state", null, "GET");
  state.csrf = data.csrf;
  $("#sysname").textContent = data.switch;
  $("#banner-text").textContent = data.banner;
  $("#logon-header").value = data.header || "";
  if (data.console) return enter(data);
  if (!data.acknowledged) { show("banner-view"); $("#banner-ack").focus(); return; }
  showLogon();
}

function showLogon(message) {
  show("logon-view");
  $("#logon-error").textContent = message || "";
  $("#logon-password").value = ""; $("#logon-otp").value = "";
  syncConsoleChoice();
  $("#logon-user").focus();
}

function syncConsoleChoice() {
  const c = document.querySelector("input[name=console]:checked").value;
  for (const e of document.querySelectorAll(".operator-only")) e.hidden = c !== "operator";
}

$("#banner-ack").addEventListener("click", async () => {
  const r = await api("/api/banner", {});
  if (r.ok) showLogon(); else $("#banner-text").textContent += `\n\n${r.data.error || "refused"}`;
});

for (const r of document.querySelectorAll("input[name=console]")) r.addEventListener("change", syncConsoleChoice);

$("#logon-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const body = { console: f.console.value, user: f.user.value.trim().toUpperCase(), password: f.password.value,
                 otp: f.otp.value.trim(), header: f.header.value.trim().toUpperCase() };
  $("#logon-submit").disabled = true;
  $("#logon-error").textContent = "Logging on…";
  const r = await api("/api/logon", body);
  $("#logon-submit").disabled = false;
  f.password.value = ""; f.otp.value = "";
  if (r.status === 409 && r.data.banner) {  // the notification changed: read it again
    $("#banner-text").textContent = r.data.banner; show("banner-view"); $("#banner-ack").focus(); return;
  }
  if (r.status === 409 && r.data.error === "already logged on") {  // another tab logged this browser on
    const s = await api("/api/state", null, "GET");
    state.csrf = s.data.csrf;
    if (s.data.console) { enter(s.data); return; }
  }
  if (!r.ok) {
    let why = r.data.error || "LOGON REFUSED";
    // The switch says E202 for every refusal (it never tells which); the page says what it may be.
    if (body.console === "operator" && why.startsWith("E202")) {
      why += ` — a wrong user ID, password or one-time password, a locked account, or a station or pool (${body.header || "?"}) that does not serve your agency`;
    }
    // A field the server named (a one-time password field holding no code) gets the focus.
    const field = r.data.field && document.getElementById(`logon-${r.data.field}`);
    $("#logon-error").textContent = why; (field || $("#logon-password")).focus(); return;
  }
  const s = await api("/api/state", null, "GET");
  state.csrf = s.data.csrf;
  enter(s.data);
});

$("#logoff").addEventListener("click", logoff);
$("#again").addEventListener("click", () => location.reload());

async function logoff() {
  await api("/api/logoff", {});
  ended("LOGOFF");
}

function ended(why) {
  state.console = null;
  if (state.ws) { try { state.ws.close(); } catch (e) { /* already closed */ } state.ws = null; }
  clearData();
  $("#who").textContent = ""; $("#status").textContent = "";
  $("#ended-why").textContent = `Session ended: ${why}.`;
  document.body.classList.remove("has-hit");
  show("ended-view");
  $("#again").focus();
}

// Nothing a session showed stays in the page once it ended (journal text, users, messages).
function clearData() {
  for (const sel of ["#inbox", "#sent", "#alerts", "#report", "#stations tbody", "#users tbody", "#avail-text",
                     "#avail-summary", "#rep-mnemonics", "#rep-users", "#rep-misuse", "#print-area", "#preview",
                     "#q-status", "#q-error", "#admin-status", "#admin-error", "#send-result", "#general-errors",
                     "#inbox-count", "#enrol-user", "#enrol-secret", "#form-fields", "#pw-result"]) {
    const e = $(sel);
    if (e) e.textContent = "";
  }
  $("#search-form").reset(); $("#add-user").reset(); $("#password-form").reset();
  $("#enrolment").hidden = true; $("#enrol-qr").removeAttribute("src"); $("#avail-chart").removeAttribute("src");
  state.outputs = new Map(); state.requests = new Map(); state.hits = []; state.forms = []; state.form = null;
}

function enter(s) {
  state.console = s.console;
  $("#who").textContent = `${s.user}${s.mnemonic ? " at " + s.mnemonic : ""} · ${s.console}`;
  if (s.console === "operator") return enterOperator(s);
  if (s.console === "investigator") return enterInvestigator(s);
  return enterAdmin(s);
}

// Activity (idle logoff is enforced by the server; the page only reports that a person is there).
function activity() {
  const now = Date.now();
  if (!state.console || now - state.lastActivity < 60000) return;
  state.lastActivity = now;
  if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify({ type: "activity" }));
  else api("/api/activity", {});
}
document.addEventListener("keydown", activity, true);
document.addEventListener("pointerdown", activity, true);

// ---------------------------------------------------------------------------------------------
// Operator terminal

async function enterOperator(s) {
  show("operator-view");
  state.ori = s.ori || "";
  const r = await api("/api/forms", null, "GET");
  state.forms = r.data.forms || [];
  const nav = $("#keys");
  nav.textContent = "";
  state.forms.forEach((f, i) => {
    nav.append(el("button", { type: "button", "data-mke": f.mke, title: `${f.title} (Alt+${i + 1})`,
                              text: `${i + 1} ${f.mke}`, onclick: () => chooseForm(f.mke) }));
  });
  nav.append(el("button", { type: "button", "data-mke": "FREE", title: "Free-form entry (Alt+0)", text: "0 Free form",
                            onclick: () => chooseForm("FREE") }));
  chooseForm(state.forms.length ? state.forms[0].mke : "FREE");
  connectInbox();
}

function chooseForm(mke) {
  for (const b of document.querySelectorAll("#keys button")) b.setAttribute("aria-pressed", String(b.dataset.mke === mke));
  const box = $("#form-fields");
  box.textContent = "";
  $("#general-errors").textContent = ""; $("#send-result").textContent = "";
  const form = state.forms.find((f) => f.mke === mke) || null;
  state.form = form;
  if (!form) {
    $("#form-title").textContent = "Free-form entry";
    $("#form-rule").textContent = "Type the message after the header: MKE.ORI.TAG/value… (Ctrl+Enter sends; Enter is a new line).";
    box.append(el("label", { for: "f-free", text: "Message" }),
               el("textarea", { id: "f-free", name: "FREE", rows: "5", spellcheck: "false", "data-tag": "FREE" }));
  } else {
    $("#form-title").textContent = `${form.mke} ${form.title}`;
    const rules = [];
    if (form.required.length) rules.push(`Required: ${form.required.join(", ")}.`);
    if (form.one_of.length) rules.push(`Identify by ${form.one_of.map((s) => s.join("+")).join(" or ")}.`);
    $("#form-rule").textContent = rules.join(" ");
    box.append(field("ORI", "Originating agency (ORI)", { value: state.ori, maxlength: "9" }));
    if (form.nlets) {
      box.append(field("DEST", form.am ? "Destinations (mnemonics, ORIs, groups; comma-separated)"
                                       : "Nlets destinations (state codes or ORIs, comma-separated; empty: NCIC form)",
                       { maxlength: "60", required: form.am }));
    }
    if (form.am) {
      box.append(el("label", { for: "f-TXT", text: "Text" }),
                 el("textarea", { id: "f-TXT", "data-tag": "TXT", rows: "5" }), el("span", { class: "field-error", id: "e-TXT" }));
    }
    for (const f of form.fields) {
      const label = `${f.tag}  ${f.label}${f.required ? " (required)" : ""}`;
      if (f.choices) {
        const sel = el("select", { id: `f-${f.tag}`, "data-tag": f.tag }, el("option", { value: "", text: "—" }),
                       ...f.choices.map((c) => el("option", { value: c, text: c })));
        box.append(el("label", { for: `f-${f.tag}`, text: label }), sel, el("span", { class: "field-error", id: `e-${f.tag}` }));
      } else {
        box.append(field(f.tag, label, { title: f.says || "" }));
      }
    }
  }
  for (const input of box.querySelectorAll("input, select, textarea")) {
    input.addEventListener("input", scheduleCheck);
    input.addEventListener("change", scheduleCheck);
  }
  updatePreview();
  const first = box.querySelector(form ? (form.am ? "#f-DEST" : `#f-${form.fields[0] ? form.fields[0].tag : "ORI"}`) : "#f-free");
  if (first) first.focus();
}

function field(tag, label, attrs) {
  const wrap = document.createDocumentFragment();
  wrap.append(el("label", { for: `f-${tag}`, text: label }),
              el("input", { id: `f-${tag}`, "data-tag": tag, spellcheck: "false", autocapitalize: "characters", ...attrs }),
              el("span", { class: "field-error", id: `e-${tag}` }));
  return wrap;
}

function valueOf(tag) {
  const e = document.getElementById(`f-${tag}`);
  return e ? e.value.trim().toUpperCase() : "";
}

function compose() {
  const form = state.form;
  if (!form) { const t = $("#f-free"); return t ? t.value.trim() : ""; }
  const ori = valueOf("ORI");
  if (form.am) {
    const txt = document.getElementById("f-TXT").value.trim();
    return `AM.${ori}.${valueOf("DEST").replace(/\s+/g, "")}.TXT ${txt}`;
  }
  const parts = [];
  for (const f of form.fields) { const v = valueOf(f.tag); if (v) parts.push(`${f.tag}/${v}`); }
  const dest = form.nlets ? valueOf("DEST").replace(/\s+/g, "") : "";
  if (dest) return `${form.mke}.${ori}.${dest}.TXT${parts.join(".")}`;
  return [form.mke, ori, ...parts].join(".");
}

function updatePreview() { $("#preview").textContent = compose(); }

let checkTimer = null;
function scheduleCheck() {
  updatePreview();
  clearTimeout(checkTimer);
  checkTimer = setTimeout(runCheck, 250);
}

async function runCheck() {
  const text = compose();
  if (!text) return null;
  const r = await api("/api/check", { text });
  if (!r.ok) return null;
  showProblems(r.data);
  if (r.data.ok && $("#send-result").textContent.startsWith("Not sent")) $("#send-result").textContent = "";
  return r.data;
}

function showProblems(res) {
  for (const e of document.querySelectorAll("#form-fields .field-error")) e.textContent = "";
  for (const e of document.querySelectorAll("#form-fields [aria-invalid]")) e.removeAttribute("aria-invalid");
  const general = [...(res.general || [])];
  for (const [tag, problems] of Object.entries(res.fields || {})) {
    const span = document.getElementById(`e-${tag}`);
    const input = document.getElementById(`f-${tag}`);
    if (span) { span.textContent = problems.join("; "); if (input) input.setAttribute("aria-invalid", "true"); }
    else general.push(...problems);
  }
  $("#general-errors").textContent = general.join("; ");
}

$("#password-form").addEventListener("submit", changePassword);
$("#msg-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  await sendCurrent();
});

$("#msg-form").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && ev.target.tagName === "TEXTAREA") {
    if (ev.ctrlKey || ev.metaKey) { ev.preventDefault(); sendCurrent(); }
  } else if (ev.key === "Enter" && ev.target.tagName === "SELECT" && !ev.altKey) {
    ev.preventDefault(); sendCurrent();  // a drop-down (SEX, RAC, PUR, PRI) does not submit a form by itself
  } else if (ev.key === "Escape") { ev.preventDefault(); chooseForm(state.form ? state.form.mke : "FREE"); }
});
$("#clear").addEventListener("click", () => chooseForm(state.form ? state.form.mke : "FREE"));

async function sendCurrent() {
  const text = compose();
  if (!text) return;
  const check = await runCheck();
  if (check && !check.ok) {
    const marked = Object.keys(check.fields || {}).length;
    $("#send-result").textContent = marked ? "Not sent: correct the fields marked." : `Not sent: ${(check.general || []).join("; ")}`;
    return;
  }
  $("#send").disabled = true;
  $("#send-result").textContent = "Sending…";
  const r = await api("/api/send", { text });
  $("#send").disabled = false;
  const req = r.data;
  if (req.ref) { req.text = req.text || text; addRequest(req); }
  if (!r.ok && !req.ref) { $("#send-result").textContent = req.error || "not sent"; return; }
  if (req.status === "accepted") {
    $("#send-result").textContent = req.mke === "AM"
      ? `Accepted (ref ${req.ref}): sent to its destinations (an administrative message gets no answer).`
      : `Accepted (ref ${req.ref}). The answer arrives in the inbox.`;
    clearTimeout(checkTimer);
    if (state.form) { for (const f of state.form.fields) { const e = document.getElementById(`f-${f.tag}`); if (e) e.value = ""; } }
    else $("#f-free").value = "";
    showProblems({ fields: {}, general: [] });
    updatePreview();
    const first = document.querySelector("#form-fields input:not(#f-ORI):not(#f-DEST), #form-fields textarea, #form-fields select");
    if (first) first.focus();
  } else {
    $("#send-result").textContent = `Refused: ${req.code || ""} ${req.reason || req.error || ""}`;
    if (req.code === "E108" || req.code === "E209") showProblemsFromReason(req.reason || "");
  }
}

function showProblemsFromReason(reason) {
  const fields = {}; const general = [];
  for (const p of reason.split("; ")) {
    const m = /^([A-Z]{3})\//.exec(p);
    if (m && document.getElementById(`e-${m[1]}`)) (fields[m[1]] = fields[m[1]] || []).push(p); else general.push(p);
  }
  showProblems({ fields, general });
}

// A request's answer count is what the inbox holds for it (or the server's count, when the page
// holds fewer: outputs beyond what it keeps): never lowered by a late copy of the request.
function answersOf(req) {
  let shown = 0;
  for (const o of state.outputs.values()) if (o.ref === req.ref) shown += 1;
  return Math.max(shown, req.answers || 0);
}

function addRequest(req) {
  state.requests.set(req.ref, req);
  req.answers = answersOf(req);
  let li = document.getElementById(`req-${req.ref}`);
  if (!li) {
    li = el("li", { id: `req-${req.ref}`, tabindex: "0" });
    $("#sent").prepend(li);
  }
  li.className = `req ${req.status}`;
  li.textContent = "";
  li.append(el("span", { class: "ref", text: req.ref }), el("span", { class: "when", text: (req.at || "").slice(11, 19) }),
            el("code", { text: req.text || req.mke }),
            el("span", { class: "st", text: req.status === "refused" ? `${req.code} ${req.reason}` : req.status }),
            el("span", { class: "answers", text: req.answers ? `${req.answers} answer(s)` : "" }));
}

function connectInbox() {
  const ws = new WebSocket(`wss://${location.host}/api/inbox`);
  state.ws = ws;
  $("#status").textContent = "connecting…";
  ws.onopen = () => {
    $("#status").textContent = "connected";
    for (const osn of [...pendingSeen]) { ws.send(JSON.stringify({ type: "alert_seen", osn })); pendingSeen.delete(osn); }
  };
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "hello") {
      for (const r of msg.requests) addRequest(r);
      for (const o of msg.outputs) { addOutput(o); syncAlert(o); }
    } else if (msg.type === "output") addOutput(msg);
    else if (msg.type === "alert_seen") lowerAlert(msg.osn);
    else if (msg.type === "request") addRequest(msg);
    else if (msg.type === "sys") $("#status").textContent = msg.text;
    else if (msg.type === "ended") { if (state.ws === ws) state.ws = null; if (state.console) ended(msg.why); }
  };
  ws.onclose = (ev) => {
    if (ev.code === 4401 && state.ws === ws) { state.ws = null; ended("SESSION ENDED"); return; }  // no live session
    if (state.ws === ws && state.console === "operator") {
      $("#status").textContent = "reconnecting…";
      setTimeout(() => { if (state.console === "operator" && state.ws === ws) connectInbox(); }, 1000);
    }
  };
}

function addOutput(o) {
  if (state.outputs.has(o.osn)) return;
  state.outputs.set(o.osn, o);
  const li = el("li", { id: `out-${o.osn}`, tabindex: "-1", class: `out ${o.kind}${o.alert ? " alert-" + o.alert : ""}` });
  const head = el("div", { class: "out-head" },
                  el("span", { class: "osn", text: `#${o.osn}` }), el("span", { class: "when", text: o.at.slice(11, 19) }),
                  el("span", { class: "hdr", text: o.header }));
  if (o.ref) {
    const req = state.requests.get(o.ref);
    head.append(el("span", { class: "link", text: `answer to ${o.ref}${req ? " " + req.mke : ""}` }));
    if (req) addRequest(req);
  }
  if (o.part) head.append(el("span", { class: "part", text: `part ${o.part[0]}/${o.part[1]}` }));
  if (o.code) head.append(el("span", { class: "code", text: o.code }));
  if (o.alert === "hit") head.append(el("strong", { class: "badge", text: "HIT" }));
  if (o.alert === "confirm") head.append(el("strong", { class: "badge", text: "HIT CONFIRMATION REQUEST" }));
  head.append(el("button", { type: "button", class: "print", text: "Print", onclick: () => printMessage(o.osn) }));
  li.append(head, el("pre", { class: "text", text: o.text }));
  $("#inbox").prepend(li);
  $("#inbox-count").textContent = `(${state.outputs.size})`;
  if (o.alert && o.alert_open) raiseAlert(o);
  if (!o.acked) reportShown(o.osn);
}

// An output is acknowledged to msc only once it has been shown on a visible page (PROTOCOL.md §5).
const unshown = new Set();
function reportShown(osn) {
  unshown.add(osn);
  flushShown();
}
function flushShown() {
  if (document.visibilityState !== "visible" || !state.ws || state.ws.readyState !== 1) return;
  requestAnimationFrame(() => {
    for (const osn of [...unshown]) {
      if (document.getElementById(`out-${osn}`)) { state.ws.send(JSON.stringify({ type: "shown", osn })); unshown.delete(osn); }
    }
  });
}
document.addEventListener("visibilitychange", flushShown);
setInterval(flushShown, 1000);

// A hit stays raised until the person acknowledges it (Alt+H or its button), on every page of the
// session and after a reload: the server keeps whether it was acknowledged and tells the other pages.
function raiseAlert(o) {
  if (state.hits.includes(o.osn)) return;
  state.hits.push(o.osn);
  document.body.classList.add("has-hit");
  const box = $("#alerts");
  const what = o.alert === "hit" ? "HIT" : "HIT CONFIRMATION REQUEST";
  const item = el("div", { class: `alert alert-${o.alert}`, id: `alert-${o.osn}` },
                  el("strong", { text: `${what}: ` }), el("span", { text: o.text.split(/\r?\n/)[0].slice(0, 160) }),
                  el("button", { type: "button", text: "Seen (Alt+H)", onclick: () => clearAlert(o.osn) }),
                  el("button", { type: "button", text: "Show", onclick: () => focusOutput(o.osn) }));
  box.prepend(item);
}

function syncAlert(o) {
  const known = state.outputs.get(o.osn);
  if (known) known.alert_open = o.alert_open;
  if (o.alert && o.alert_open) raiseAlert(o); else lowerAlert(o.osn);
}

function clearAlert(osn) {
  lowerAlert(osn);
  const o = state.outputs.get(osn);
  if (o) o.alert_open = false;
  if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify({ type: "alert_seen", osn }));
  else pendingSeen.add(osn);
}
const pendingSeen = new Set();  // acknowledged while the inbox was reconnecting: told once it is back

function lowerAlert(osn) {
  const a = document.getElementById(`alert-${osn}`);
  if (a) a.remove();
  state.hits = state.hits.filter((x) => x !== osn);
  if (!state.hits.length) document.body.classList.remove("has-hit");
}

function focusOutput(osn) { const li = document.getElementById(`out-${osn}`); if (li) { li.tabIndex = 0; li.focus(); } }

function printMessage(osn) {
  const o = state.outputs.get(osn);
  if (!o) return;
  const area = $("#print-area");
  area.textContent = "";
  area.append(el("h1", { text: `${$("#sysname").textContent} — message #${o.osn}` }),
              el("p", { text: `Received ${o.at} UTC · header ${o.header} · printed by ${$("#who").textContent}` }),
              el("pre", { text: o.text }));
  document.body.classList.add("print-one");
  window.print();
  document.body.classList.remove("print-one");
}

// The operator's own password change: sent to the switch as PWD on this session's connection;
// the switch's answer (E202 wrong password, E108 a password rule) is shown as it says it.
async function changePassword(ev) {
  ev.preventDefault();
  const old = $("#pw-old"), nw = $("#pw-new"), rep = $("#pw-repeat"), out = $("#pw-result");
  if (!old.value || !nw.value) { out.textContent = "Give the current and the new password."; return; }
  if (nw.value !== rep.value) { out.textContent = "The new password and its repetition differ."; rep.focus(); return; }
  out.textContent = "Changing…";
  const r = await api("/api/password", { old: old.value, new: nw.value, repeat: rep.value });
  old.value = ""; nw.value = ""; rep.value = "";
  out.className = r.ok ? "ok" : "error";
  out.textContent = r.ok ? "Password changed (journaled)." : `Not changed: ${r.data.code || ""} ${r.data.error || ""}`.trim();
  if (!r.ok) old.focus();
}

// Keyboard: a dispatcher never needs the mouse for the common flow.
document.addEventListener("keydown", (ev) => {
  if (state.console === "operator") {
    if (ev.altKey && /^[0-9]$/.test(ev.key)) {
      ev.preventDefault();
      const n = Number(ev.key);
      if (n === 0) chooseForm("FREE"); else if (state.forms[n - 1]) chooseForm(state.forms[n - 1].mke);
      return;
    }
    if (ev.altKey && (ev.key === "i" || ev.key === "I")) { ev.preventDefault(); const first = $("#inbox li"); if (first) { first.tabIndex = 0; first.focus(); } return; }
    if (ev.altKey && (ev.key === "h" || ev.key === "H")) { ev.preventDefault(); if (state.hits.length) clearAlert(state.hits[state.hits.length - 1]); return; }
    if (ev.altKey && (ev.key === "p" || ev.key === "P")) { ev.preventDefault(); printFocused(); return; }
    if (ev.altKey && (ev.key === "w" || ev.key === "W")) { ev.preventDefault(); $("#pw-old").focus(); return; }
    const inInbox = ev.target.closest && ev.target.closest("#inbox");
    if (inInbox && (ev.key === "ArrowDown" || ev.key === "ArrowUp")) {
      ev.preventDefault();
      const li = ev.target.closest("li");
      const next = ev.key === "ArrowDown" ? li.nextElementSibling : li.previousElementSibling;
      if (next) { next.tabIndex = 0; next.focus(); }
      return;
    }
    if (inInbox && (ev.key === "p" || ev.key === "P")) { ev.preventDefault(); printFocused(); return; }
  }
  if (state.console && ev.key === "?" && !/INPUT|TEXTAREA|SELECT/.test(ev.target.tagName)) { ev.preventDefault(); $("#help").showModal(); return; }
  if (state.console && ev.altKey && (ev.key === "l" || ev.key === "L")) { ev.preventDefault(); logoff(); return; }
  if (state.console === "investigator" && ev.altKey) {
    if (ev.key === "e" || ev.key === "E") { ev.preventDefault(); exportBundle(); }
    else if (ev.key === "v" || ev.key === "V") { ev.preventDefault(); verifyJournal(); }
    else if (ev.key === "p" || ev.key === "P") { ev.preventDefault(); window.print(); }
  }
  if (state.console === "admin" && ev.altKey && /^[1-3]$/.test(ev.key)) {
    ev.preventDefault(); adminTab(["stations", "users", "reports"][Number(ev.key) - 1]);
  }
  if (!state.console && ev.key === "Enter") {
    if (!$("#banner-view").hidden) { ev.preventDefault(); $("#banner-ack").click(); }
    else if (!$("#ended-view").hidden) { ev.preventDefault(); $("#again").click(); }
  }
});

function printFocused() {
  const li = document.activeElement && document.activeElement.closest && document.activeElement.closest("#inbox li");
  const target = li || $("#inbox li");
  if (target) printMessage(Number(target.id.slice(4)));
}

$("#help-button").addEventListener("click", () => $("#help").showModal());
$("#help-close").addEventListener("click", () => $("#help").close());

// ---------------------------------------------------------------------------------------------
// Investigator console

// Investigator and administrator pages hold the session's WebSocket too: the server says at once
// when it ended the session (idle logoff, the 12-hour limit, the user disabled), and the page clears.
function connectSession() {
  const ws = new WebSocket(`wss://${location.host}/api/inbox`);
  const mine = state.console;
  state.ws = ws;
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "ended") { if (state.ws === ws) state.ws = null; if (state.console) ended(msg.why); }
  };
  ws.onclose = (ev) => {
    if (state.ws !== ws) return;
    if (ev.code === 4401) { state.ws = null; if (state.console) ended("SESSION ENDED"); return; }
    setTimeout(() => { if (state.console === mine && state.ws === ws) connectSession(); }, 1000);
  };
}

function enterInvestigator() {
  connectSession();
  show("investigator-view");
  $("#q-case").focus();
}

function searchBody() {
  const f = $("#search-form");
  const body = {};
  for (const name of ["case", "from", "to", "mnemonic", "user", "ori", "mke", "kind", "taf", "txn", "limit"]) body[name] = f.elements[name].value.trim();
  body.tokens = f.elements.tokens.value.split(/\n/).map((t) => t.trim()).filter(Boolean);
  return body;
}

$("#search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#q-error").textContent = ""; $("#q-status").textContent = "Searching…";
  clearFilterError();
  const r = await api("/api/journal/search", searchBody());
  if (!r.ok) { $("#q-status").textContent = ""; showFilterError(r.data); return; }
  $("#q-status").textContent = `${r.data.records.length} record(s); this search is recorded in the journal (AUDIT).`;
  renderReport(r.data);
});

// A refused filter: the server's words name the field; the focus goes to it.
function showFilterError(data) {
  $("#q-error").textContent = data.error || "refused";
  const input = data.field ? document.getElementById(`q-${data.field}`) : null;
  if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
}
function clearFilterError() {
  $("#q-error").textContent = "";
  for (const e of document.querySelectorAll("#search-form [aria-invalid]")) e.removeAttribute("aria-invalid");
}

function renderReport(data) {
  const box = $("#report");
  box.textContent = "";
  box.append(el("pre", { class: "report-head", text: data.header }));
  const table = el("table", { class: "records" });
  table.append(el("thead", {}, el("tr", {}, ...["Seq", "Time (UTC)", "Kind", "Dir", "Mnemonic", "User", "MKE", "Code", "Txn"].map((h) => el("th", { text: h })))));
  const tb = el("tbody");
  for (const r of data.records) {
    tb.append(el("tr", {}, ...[r.seq, r.ts, r.kind, r.direction, r.mnemonic, r.user, r.mke, r.code, r.txn].map((v) => el("td", { text: v == null ? "-" : String(v) }))));
    tb.append(el("tr", { class: "rec-text" }, el("td", { colspan: "9" }, el("pre", { text: r.text }))));
  }
  table.append(tb);
  box.append(table, el("p", { class: "report-end", text: `=== end of report: ${data.records.length} record(s) ===` }));
}

async function exportBundle() {
  const f = $("#search-form");
  clearFilterError();
  // Checked first (nothing searched, nothing audited): the export's answer is a download, so a
  // refusal there could not be shown next to its field.
  const r = await api("/api/journal/check", searchBody());
  if (!r.ok) { showFilterError(r.data); return; }
  $("#export-csrf").value = state.csrf;
  $("#q-status").textContent = "Export requested: the bundle downloads when it is written (AUDIT recorded).";
  f.submit();
}
$("#q-export").addEventListener("click", exportBundle);

async function verifyJournal() {
  $("#q-status").textContent = "Verifying every record, tag, checkpoint and signature…";
  const r = await api("/api/journal/verify", {});
  const d = r.data;
  if (!r.ok) { $("#q-status").textContent = ""; $("#q-error").textContent = d.error || ""; return; }
  $("#q-status").textContent = d.ok ? `Journal verified: ${d.records} records, ${d.checkpoints} signed checkpoints, tree size ${d.tree_size} (${d.seconds} s).`
                                    : `VERIFICATION FAILED at sequence ${d.first_bad}: ${d.reason || d.error}`;
}
$("#q-verify").addEventListener("click", verifyJournal);
$("#q-print").addEventListener("click", () => window.print());

// ---------------------------------------------------------------------------------------------
// Administrator console

function enterAdmin() {
  connectSession();
  show("admin-view");
  adminTab("stations");
}

for (const b of document.querySelectorAll("#admin-tabs button")) b.addEventListener("click", () => adminTab(b.dataset.tab));

async function adminTab(tab) {
  for (const t of document.querySelectorAll("#admin-view .tab")) t.hidden = t.id !== `tab-${tab}`;
  for (const b of document.querySelectorAll("#admin-tabs button")) b.setAttribute("aria-pressed", String(b.dataset.tab === tab));
  $("#admin-error").textContent = "";
  if (tab === "stations") await loadStations();
  else if (tab === "users") await loadUsers();
  else await loadReports();
}

function actionButton(label, fn) { return el("button", { type: "button", text: label, onclick: fn }); }

async function adminDo(path, body, done) {
  $("#admin-error").textContent = ""; $("#admin-status").textContent = "…";
  const r = await api(path, body);
  if (!r.ok) { $("#admin-status").textContent = ""; $("#admin-error").textContent = r.data.error; return null; }
  $("#admin-status").textContent = done;
  return r.data;
}

async function loadStations() {
  const r = await api("/api/admin/stations", null, "GET");
  const tb = $("#stations tbody");
  tb.textContent = "";
  if (!r.ok) { $("#admin-error").textContent = r.data.error || ""; return; }  // e.g. 503 STORAGE UNAVAILABLE
  for (const s of r.data.stations || []) {
    const act = s.status === "active"
      ? actionButton(`Disable ${s.mnemonic}`, async () => { if (await adminDo("/api/admin/station", { mnemonic: s.mnemonic, action: "disable" }, `Station ${s.mnemonic} disabled (journaled with your name).`)) loadStations(); })
      : actionButton(`Enable ${s.mnemonic}`, async () => { if (await adminDo("/api/admin/station", { mnemonic: s.mnemonic, action: "enable" }, `Station ${s.mnemonic} enabled (journaled with your name).`)) loadStations(); });
    tb.append(el("tr", { id: `st-${s.mnemonic}`, class: s.status },
                 ...[s.mnemonic, s.kind, s.ori, s.status, s.client_cert_cn ? `CN ${s.client_cert_cn}` : s.addresses.join(", "), s.last_use || "-"].map((v) => el("td", { text: v })),
                 el("td", {}, act)));
  }
}

async function loadUsers() {
  const r = await api("/api/admin/users", null, "GET");
  const tb = $("#users tbody");
  tb.textContent = "";
  if (!r.ok) { $("#admin-error").textContent = r.data.error || ""; return; }
  for (const u of r.data.users || []) {
    const acts = el("td");
    acts.append(u.status === "active"
      ? actionButton(`Disable ${u.id}`, () => userAction(u.id, "disable"))
      : actionButton(`Enable ${u.id}`, () => userAction(u.id, "enable")));
    if (u.locked) acts.append(actionButton(`Unlock ${u.id}`, () => userAction(u.id, "unlock")));
    tb.append(el("tr", { id: `user-${u.id}`, class: `${u.status}${u.locked ? " locked" : ""}` },
                 ...[u.id, u.name, u.role, u.ori, u.status, u.locked ? "LOCKED" : "no", u.totp ? "yes" : "no", u.certified_until || "-", u.last_logon || "-"].map((v) => el("td", { text: v })),
                 acts));
  }
  const ori = $("#u-ori"); const role = $("#u-role");
  if (!ori.options.length) for (const a of r.data.agencies || []) ori.append(el("option", { value: a.ori, text: `${a.ori} ${a.name}` }));
  if (!role.options.length) for (const x of r.data.roles || []) role.append(el("option", { value: x, text: x }));
}

async function userAction(id, action) {
  if (await adminDo("/api/admin/user/status", { id, action }, `User ${id}: ${action} done (journaled with your name).`)) loadUsers();
}

$("#add-user").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const v = (id) => document.getElementById(id);
  const body = { id: v("u-id").value.trim().toUpperCase(), name: v("u-name").value.trim().toUpperCase(), ori: v("u-ori").value,
                 role: v("u-role").value, dob: v("u-dob").value.trim(), certified_until: v("u-cert").value.trim(),
                 password: v("u-password").value, repeat: v("u-repeat").value, totp: v("u-totp").checked };
  const d = await adminDo("/api/admin/user", body, `User ${body.id} added (journaled with your name).`);
  v("u-password").value = ""; v("u-repeat").value = "";
  if (!d) return;
  f.reset();
  if (d.qr) {
    $("#enrol-user").textContent = d.id; $("#enrol-qr").src = d.qr; $("#enrol-secret").textContent = d.totp_secret;
    $("#enrolment").hidden = false; $("#enrol-done").focus();
  }
  loadUsers();
});
$("#enrol-done").addEventListener("click", () => {
  $("#enrolment").hidden = true; $("#enrol-qr").removeAttribute("src"); $("#enrol-secret").textContent = "";
});

async function loadReports() {
  const a = await api("/api/admin/report/availability", null, "GET");
  if (a.ok) {
    $("#avail-chart").src = a.data.chart;
    const w = a.data.doc.windows["365d"];
    $("#avail-text").textContent = a.data.text;
    $("#avail-summary").textContent = `Last 365 days: ${(w.ratio * 100).toFixed(3)} % (target 98 %) — ${w.meets_target ? "meets the target" : "BELOW THE TARGET"}; ${w.outages.length} outage(s).`;
  } else {
    $("#avail-summary").textContent = a.data.error || "";
  }
  const m = await api("/api/admin/report/mnemonics", null, "GET");
  $("#rep-mnemonics").textContent = m.data.text || m.data.error || "";
  const u = await api("/api/admin/report/users", null, "GET");
  $("#rep-users").textContent = u.data.text || u.data.error || "";
}
$("#rep-misuse-run").addEventListener("click", async () => {
  const d = await adminDo("/api/admin/report/misuse", {}, "Misuse report run (AUDIT recorded).");
  if (d) $("#rep-misuse").textContent = d.text;
});

boot();
