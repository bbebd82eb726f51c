"""The ledger's chain rules: what an event's content is, how a row is hashed, what is the same.

Every row links to the one before it by `prev_hash`, in one of several independent chains
(partitions, `part`), each ordered by `chain_seq`; a chain's first row links to
`GENESIS_HASH`. An action's rows all go to one partition, chosen by a hash of its id, so
appenders of different actions rarely wait for each other. Partition 0 is the single global
chain of ledgers written before partitions existed, continued. Signed checkpoints over every
partition's head (`checkpoint_hash`) tie the chains together, so one kept checkpoint hash
proves everything before it. Pure functions only: the store writes with them and the audit
tools verify with them, so both always agree.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, JsonValue

from signoff.models import canonical_json

GENESIS_HASH = "0" * 64


def iso_utc(at: datetime) -> str:
    """ISO-8601 in UTC with microseconds: the one spelling of a time that goes into a hash."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def event_content(
    action_id: str,
    seq: int,
    kind: str,
    digest: str,
    actor: str | None,
    channel: str | None,
    at: datetime,
    payload: Any,
    *,
    run_id: str = "",
    part: int = 0,
) -> dict[str, Any]:
    """The content fields of an event in the form they are hashed and compared.

    `run_id` is part of the content only when set, so rows written before runs were recorded
    (run_id '') hash exactly as they did and keep verifying; likewise `part` only when not 0,
    so partition 0 continues the old single chain unchanged.
    """
    content = {
        "action_id": action_id,
        "seq": seq,
        "kind": str(kind),
        "digest": digest,
        "actor": actor,
        "channel": channel,
        "at": iso_utc(at),
        "payload": payload,
    }
    if run_id:
        content["run_id"] = run_id
    if part:
        content["part"] = part
    return content


def ledger_json(value: Any) -> str:
    """`canonical_json` of a JSON value (string keys), faster when its text is all ASCII.

    Canonical JSON only differs from plain sorted, compact `json.dumps` by normalising strings
    to NFC; text that comes out pure ASCII (with ensure_ascii off) has only ASCII strings,
    which NFC leaves as they are. So the result is the same; the walk that normalises is
    skipped for the rows that need none, which is most of them and most of verify's time.
    """
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text if text.isascii() else canonical_json(value)


def row_hash(chain_seq: int, content: dict[str, Any], prev_hash: str) -> str:
    """SHA-256 hex over the canonical JSON of a row's content, its chain position and prev_hash."""
    body = ledger_json({**content, "chain_seq": chain_seq, "prev_hash": prev_hash})
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def partition_of(action_id: str, partitions: int) -> int:
    """The partition (chain) an action's rows go to, out of `partitions`."""
    if partitions <= 1:
        return 0
    digest = hashlib.sha256(action_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def hash_template(content: dict[str, Any]) -> tuple[str, str, str]:
    """The canonical JSON that `row_hash` hashes, cut where chain_seq and prev_hash go.

    The store lets Postgres fill in the chain position and link while it holds the partition
    lock, in the same statement: head + chain_seq + middle + prev_hash + tail is exactly
    `canonical_json({**content, "chain_seq": chain_seq, "prev_hash": prev_hash})`, because
    canonical JSON is keys sorted, no whitespace, each value serialised on its own.
    """
    pairs = [(k, f"{json.dumps(k)}:{ledger_json(v)}") for k, v in sorted(content.items())]
    before = [p for k, p in pairs if k < "chain_seq"]
    between = [p for k, p in pairs if "chain_seq" < k < "prev_hash"]
    after = [p for k, p in pairs if k > "prev_hash"]
    head = "{" + "".join(p + "," for p in before) + '"chain_seq":'
    middle = "," + "".join(p + "," for p in between) + '"prev_hash":"'
    tail = '"' + "".join("," + p for p in after) + "}"
    return head, middle, tail


def identity_hash(content: dict[str, Any]) -> str:
    """SHA-256 hex of an event's identity (`event_identity`): what a retry must match."""
    body = ledger_json(list(event_identity(content)))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def checkpoint_body(
    seq: int, at: datetime, heads: dict[str, list[JsonValue]], prev_hash: str
) -> str:
    """The canonical JSON a checkpoint's hash and signature cover."""
    return canonical_json({"seq": seq, "at": iso_utc(at), "heads": heads, "prev_hash": prev_hash})


def checkpoint_hash(body: str) -> str:
    """SHA-256 hex of a checkpoint's body."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def event_key(content: dict[str, Any]) -> tuple[str, str, int]:
    """Where an event sits: its action, its run and its place in that run."""
    return (content["action_id"], content.get("run_id", ""), content["seq"])


def event_identity(content: dict[str, Any]) -> tuple[Any, ...]:
    """What makes an event the same event: everything but the time it was taken at.

    A local activity whose result was not yet in history runs again after a workflow task
    retry (a crashed worker), with a later workflow time (`at`, and the `at` a decision or
    refusal carries in its payload). That is the same event; the first write stands. Any other
    difference at the same (action, run, seq) is a real conflict.
    """
    payload = content["payload"]
    if isinstance(payload, dict):
        payload = {k: v for k, v in payload.items() if k != "at"}
    fields = ("action_id", "seq", "kind", "digest", "actor", "channel")
    return (*(content[k] for k in fields), content.get("run_id", ""), canonical_json(payload))


class LedgerRow(BaseModel):
    """One stored ledger row, as read back for verification and export."""

    id: int
    part: int = 0
    chain_seq: int
    action_id: str
    run_id: str = ""
    seq: int
    kind: str
    digest: str
    actor: str | None
    channel: str | None
    at: datetime
    payload: dict[str, JsonValue]
    recorded_at: datetime
    prev_hash: str
    hash: str

    def content(self) -> dict[str, Any]:
        """The fields the event's content is made of (what a retry must match)."""
        return event_content(
            self.action_id,
            self.seq,
            self.kind,
            self.digest,
            self.actor,
            self.channel,
            self.at,
            self.payload,
            run_id=self.run_id,
            part=self.part,
        )

    def computed_hash(self, chain_seq: int | None = None, prev_hash: str | None = None) -> str:
        """The hash this row should have (optionally as if it sat elsewhere in the chain)."""
        return row_hash(
            self.chain_seq if chain_seq is None else chain_seq,
            self.content(),
            self.prev_hash if prev_hash is None else prev_hash,
        )
