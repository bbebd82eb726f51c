"""The approval page's HTML: server-rendered, one inline style sheet, no external assets.

Every value that could come from an agent (or anyone but this file) goes through
`signoff.neutralise.html`: hidden characters shown as escapes, then entity-escaped, so no text
can open a tag, hide a character or fake part of the page. The inline style and script carry a
per-response nonce named by the Content-Security-Policy, which allows nothing else.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from channels.notifier import outcome_text, progress_text, requester_text, requirement_text
from signoff import neutralise
from signoff.models import ActionStatus, Principal
from workers.gateway.web.credentials import Credential

STYLE = """
:root{color-scheme:light;--fg:#1b1b1b;--muted:#4a4a4a;--line:#c8c8c8;--bg:#fff;--ok:#0b6b2f;
--no:#a3161a;--warn:#7a4b00;--focus:#1a56c7}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
main{max-width:46rem;margin:0 auto;padding:1rem}
h1{font-size:1.35rem;margin:.2rem 0 .6rem;overflow-wrap:anywhere}
h2{font-size:1.05rem;margin:1.2rem 0 .4rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem .8rem;margin:0}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f3f3f3;border:1px solid var(--line);
padding:.6rem;border-radius:4px;margin:0;font:14px/1.4 ui-monospace,Menlo,Consolas,monospace}
code{font:14px ui-monospace,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.status{display:inline-block;padding:.15rem .5rem;border-radius:4px;border:1px solid var(--fg);
font-weight:600}
.notice{border-left:4px solid var(--warn);background:#fff4df;padding:.5rem .8rem;margin:.8rem 0}
.error{border-left:4px solid var(--no);background:#fde8e8;padding:.5rem .8rem;margin:.8rem 0}
.stepup{border-left:4px solid var(--focus);background:#e8effc;padding:.5rem .8rem;margin:.8rem 0}
label{display:block;font-weight:600;margin:.8rem 0 .3rem}
textarea{width:100%;min-height:5rem;font:inherit;padding:.5rem;border:1px solid var(--muted);
border-radius:4px}
textarea.json{min-height:9rem;font:14px/1.4 ui-monospace,Menlo,Consolas,monospace}
.buttons{display:flex;gap:.8rem;flex-wrap:wrap;margin-top:.8rem}
button{font:inherit;font-weight:600;padding:.7rem 1.4rem;border-radius:4px;border:0;color:#fff;
cursor:pointer;min-height:44px}
button.approve{background:var(--ok)}button.deny{background:var(--no)}
button.plain{background:#fff;color:var(--fg);border:1px solid var(--fg)}
a{color:#0b4bb3}
:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
footer{margin-top:2rem;padding-top:.6rem;border-top:1px solid var(--line);color:var(--muted);
font-size:.9rem;display:flex;gap:1rem;flex-wrap:wrap;align-items:center}
footer form,form.inline{display:inline}
ul{padding-left:1.2rem;margin:.2rem 0}li{overflow-wrap:anywhere}
"""

# Base64url helpers and the two WebAuthn ceremonies; the server checks everything.
SCRIPT = """
const enc=b=>btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\\+/g,'-')
 .replace(/\\//g,'_').replace(/=+$/,'');
const dec=s=>Uint8Array.from(atob(s.replace(/-/g,'+').replace(/_/g,'/')+'='
 .repeat((4-s.length%4)%4)),c=>c.charCodeAt(0));
async function post(url,data){const r=await fetch(url,{method:'POST',credentials:'same-origin',
 headers:{'Content-Type':'application/x-www-form-urlencoded'},body:new URLSearchParams(data)});
 const j=await r.json().catch(()=>({}));
 if(!r.ok)throw new Error((j.error&&j.error.message)||('HTTP '+r.status));return j;}
function say(text){const e=document.getElementById('webauthn-error');e.textContent=text;
 e.hidden=false;e.focus();}
const reg=document.getElementById('register');
if(reg)reg.addEventListener('click',async()=>{try{
 const o=await post('/a/register/options',{csrf:reg.dataset.csrf});const p=o.publicKey;
 p.challenge=dec(p.challenge);p.user.id=dec(p.user.id);
 (p.excludeCredentials||[]).forEach(c=>c.id=dec(c.id));
 const c=await navigator.credentials.create({publicKey:p});
 const body={id:c.id,rawId:enc(c.rawId),type:c.type,response:{
  clientDataJSON:enc(c.response.clientDataJSON),
  attestationObject:enc(c.response.attestationObject),
  transports:c.response.getTransports?c.response.getTransports():[]}};
 await post('/a/register',{csrf:reg.dataset.csrf,nonce:o.nonce,credential:JSON.stringify(body)});
 location.reload();}catch(err){say('Registering the security key failed: '+err.message);}});
const form=document.getElementById('decide');
if(form&&form.dataset.stepUp)form.addEventListener('submit',async ev=>{
 if(form.dataset.sent)return;ev.preventDefault();
 const choice=ev.submitter?ev.submitter.value:'approve';try{
 const o=await post(form.dataset.stepUp,{csrf:form.elements.csrf.value,
  digest:form.elements.digest.value});const p=o.publicKey;p.challenge=dec(p.challenge);
 (p.allowCredentials||[]).forEach(c=>c.id=dec(c.id));
 const a=await navigator.credentials.get({publicKey:p});
 const body={id:a.id,rawId:enc(a.rawId),type:a.type,response:{
  clientDataJSON:enc(a.response.clientDataJSON),
  authenticatorData:enc(a.response.authenticatorData),
  signature:enc(a.response.signature),
  userHandle:a.response.userHandle?enc(a.response.userHandle):null}};
 const add=(n,v)=>{const i=document.createElement('input');i.type='hidden';i.name=n;i.value=v;
  form.appendChild(i);};
 add('decision',choice);add('nonce',o.nonce);add('assertion',JSON.stringify(body));
 form.dataset.sent='1';form.submit();}catch(err){say('Security key check failed: '+err.message);}});
"""


def t(value: object) -> str:
    """Any value as inert HTML text (hidden characters visible, markup escaped)."""
    return neutralise.html(str(value))


def t_json(value: Any) -> str:
    """A JSON value as inert HTML text: hidden characters escaped the JSON way, then markup."""
    # visible_json already shows every hidden character; only the markup is left to escape.
    return html.escape(neutralise.visible_json(value, indent=2), quote=True)


def _when(at: datetime | None) -> str:
    return "-" if at is None else f"{at:%Y-%m-%d %H:%M:%S} UTC"


def page(title: str, body: str, *, nonce: str, principal: str | None = None, csrf: str = "") -> str:
    """A whole HTML document: the body, the footer for a signed-in person, style and script."""
    footer = ""
    if principal is not None:
        footer = (
            f"<footer><span>Signed in as <strong>{t(principal)}</strong></span>"
            '<a href="/a/register">Security keys</a>'
            '<form method="post" action="/a/logout">'
            f'<input type="hidden" name="csrf" value="{t(csrf)}">'
            '<button type="submit" class="plain">Sign out</button></form></footer>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f'<title>{t(title)}</title><style nonce="{nonce}">{STYLE}</style></head>'
        f"<body><main>{body}"
        '<p id="webauthn-error" class="error" role="alert" tabindex="-1" hidden></p>'
        f'{footer}</main><script nonce="{nonce}">{SCRIPT}</script></body></html>'
    )


def message_page(title: str, text: str, *, nonce: str, link: tuple[str, str] | None = None) -> str:
    """A page that only says something (signed out, not found, not configured)."""
    extra = f'<p><a href="{t(link[0])}">{t(link[1])}</a></p>' if link else ""
    return page(title, f"<h1>{t(title)}</h1><p>{t(text)}</p>{extra}", nonce=nonce)


def _rows(pairs: Sequence[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{t(k)}</dt><dd>{t(v)}</dd>" for k, v in pairs) + "</dl>"


def _list(items: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{t(i)}</li>" for i in items) + "</ul>"


def action_body(
    status: ActionStatus,
    *,
    principal: Principal,
    csrf: str,
    may_decide: str | None,
    notice: str | None = None,
    has_keys: bool = True,
    amend_text: str | None = None,
    amend_reason: str = "",
) -> str:
    """The action as every view shows it, its digest, rule, progress, refusals and the form.

    `may_decide`: None when the person may decide now, else why not (shown instead of buttons).
    `amend_text`/`amend_reason`: what the approve-with-changes form shows (after a refused
    amendment, what was typed; else the current params).
    """
    request = status.request
    verdict = status.verdict
    risk = verdict.risk if verdict else (request.risk or "unknown")
    parts = [f"<h1>{t(request.action)} on {t(request.target)}</h1>"]
    parts.append(f'<p><span class="status">{t(outcome_text(status))}</span></p>')
    if notice:
        parts.append(f'<p class="error" role="alert">{t(notice)}</p>')
    rows = [
        ("Action", request.action),
        ("Target", request.target),
        ("Risk", risk),
        ("Requester", requester_text(status)),
        ("On behalf of", request.on_behalf_of or "-"),
        ("Agent owner", status.owner or "none"),
        ("Needs", requirement_text(status)),
        ("Progress", progress_text(status) or "-"),
        ("Requested", _when(status.created_at)),
    ]
    if status.expires_at is not None and not status.terminal:
        rows.append(("Expires", _when(status.expires_at)))
    parts.append(_rows(rows))
    parts.append("<h2>Justification</h2>")
    parts.append(f"<pre>{t(request.justification)}</pre>")
    parts.append("<h2>Params</h2>")
    parts.append(f"<pre>{t_json(request.params)}</pre>")
    parts.append("<h2>Policy</h2>")
    if verdict is not None:
        policy = [("Rule", verdict.rule_id), ("Reason", verdict.reason), ("Effect", verdict.effect)]
        if verdict.step_up:
            policy.append(("Step-up", f"{verdict.step_up}: every decision needs a security key"))
        parts.append(_rows(policy))
    else:
        parts.append("<p>Not evaluated yet.</p>")
    parts.append("<h2>Digest</h2>")
    parts.append(f"<p><code>{t(status.digest)}</code></p>")
    if status.decisions:
        parts.append("<h2>Decisions</h2>")
        parts.append(
            _list(
                [
                    f"{d.decision} by {d.approver} via {d.channel} at {_when(d.at)}"
                    + (f": {d.reason}" if d.reason else "")
                    + (" (security key)" if d.step_up else "")
                    for d in status.decisions
                ]
            )
        )
    if status.refused:
        parts.append("<h2>Refused attempts</h2>")
        parts.append(
            _list(
                [
                    f"{r.kind} {r.decision or ''} by {r.approver} via {r.channel} "
                    f"({r.code.value}): {r.message}"
                    for r in status.refused
                ]
            )
        )
    if status.terminal:
        parts.append("<h2>Outcome</h2>")
        outcome = [("Status", status.status.value), ("Decided", _when(status.decided_at))]
        if status.error:
            outcome.append(("Error", status.error))
        parts.append(_rows(outcome))
        if status.result is not None:
            parts.append(f"<pre>{t_json(status.result)}</pre>")
    elif may_decide is not None:
        parts.append(f'<p class="notice">{t(may_decide)}</p>')
    else:
        parts.append(_form(status, csrf, has_keys=has_keys))
        parts.append(_amend_form(status, csrf, amend_text, amend_reason))
    return "".join(parts)


def _amend_form(status: ActionStatus, csrf: str, text: str | None, reason: str) -> str:
    """Approve with changes: the params as JSON to edit, a required reason, the digest shown."""
    if status.verdict is not None and status.verdict.step_up is not None:
        # The page's security-key check is bound to decisions; an amendment is not offered here.
        return (
            "<h2>Approve with changes</h2>"
            '<p class="notice">Changing the params is not offered on this page for a rule '
            "that needs a security key: approve or deny it, with a reason the agent reads.</p>"
        )
    shown = text if text is not None else neutralise.visible_json(status.request.params, indent=2)
    return (
        "<h2>Approve with changes</h2>"
        "<p>Instead of approving, propose other params: this action ends superseded and a new "
        "one with your params is requested for the same requester. It needs someone else's "
        "approval, never yours.</p>"
        f'<form id="amend" method="post" action="/a/{t(status.id)}/amend">'
        f'<input type="hidden" name="csrf" value="{t(csrf)}">'
        f'<input type="hidden" name="digest" value="{t(status.digest)}">'
        f"<p>Changing the action with digest <code>{t(status.digest)}</code></p>"
        '<label for="amend-params">Params (JSON object)</label>'
        '<textarea id="amend-params" name="params" required spellcheck="false" '
        f'class="json">{html.escape(shown, quote=True)}</textarea>'
        '<label for="amend-reason">Reason (required; the agent is told what changed)</label>'
        '<textarea id="amend-reason" name="reason" maxlength="2000" required>'
        f"{html.escape(reason, quote=True)}</textarea>"
        '<div class="buttons">'
        '<button type="submit" class="plain">Replace with these params</button>'
        "</div></form>"
    )


def _form(status: ActionStatus, csrf: str, *, has_keys: bool) -> str:
    step_up = status.verdict is not None and status.verdict.step_up is not None
    attrs = f' data-step-up="/a/{t(status.id)}/step-up"' if step_up else ""
    note = ""
    if step_up:
        note = (
            '<p class="stepup">This rule needs a security key: your browser asks for it when '
            "you approve or deny.</p>"
        )
        if not has_keys:
            note += (
                '<p class="notice">You have no security key registered yet: '
                '<a href="/a/register">register one</a> first.</p>'
            )
    return (
        "<h2>Your decision</h2>"
        + note
        + f'<form id="decide" method="post" action="/a/{t(status.id)}/decide"{attrs}>'
        f'<input type="hidden" name="csrf" value="{t(csrf)}">'
        f'<input type="hidden" name="digest" value="{t(status.digest)}">'
        '<label for="reason">Reason (required to deny; the agent is told)</label>'
        '<textarea id="reason" name="reason" maxlength="2000"></textarea>'
        '<div class="buttons">'
        '<button type="submit" name="decision" value="approve" class="approve">Approve</button>'
        '<button type="submit" name="decision" value="deny" class="deny">Deny</button>'
        "</div></form>"
    )


def register_body(credentials: Sequence[Credential], csrf: str) -> str:
    """The security-key page: what is registered and a button to add one."""
    parts = ["<h1>Security keys</h1>"]
    parts.append(
        "<p>Rules that need a step-up count your decision only with a security key (or "
        "passkey) registered here.</p>"
    )
    if credentials:
        parts.append("<ul>")
        for c in credentials:
            label = f"{c.credential_id[:16]}… added {_when(c.created_at)}, last used " + _when(
                c.last_used_at
            )
            parts.append(
                f'<li>{t(label)} <form method="post" action="/a/register/remove" class="inline">'
                f'<input type="hidden" name="csrf" value="{t(csrf)}">'
                f'<input type="hidden" name="credential_id" value="{t(c.credential_id)}">'
                '<button type="submit" class="plain" '
                f'aria-label="Remove key {t(c.credential_id[:16])}">Remove</button></form></li>'
            )
        parts.append("</ul>")
    else:
        parts.append("<p>None registered yet.</p>")
    parts.append(
        f'<button type="button" id="register" class="approve" data-csrf="{t(csrf)}">'
        "Register a security key</button>"
    )
    return "".join(parts)
