"""Actions as visibility lists them, decoded only as far as an inbox reads them.

The SDK's `list_workflows` makes a `WorkflowExecution` of every row, and that decodes every
search attribute of the row twice (typed and untyped). For an inbox page of 100 rows this was
most of the gateway's CPU (bench/RESULTS.md, round 12). An inbox row needs three things: the
id, the groups that may decide the action now, and the status the run keeps in its memo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from temporalio.api.common.v1 import Payload, SearchAttributes
from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.api.workflowservice.v1 import ListWorkflowExecutionsRequest
from temporalio.client import Client
from temporalio.converter import decode_typed_search_attributes

from workflows import search_attributes as sa
from workflows.action import INBOX_MEMO_KEY


@dataclass(frozen=True)
class Listed:
    """One listed action: its id, who may decide it now, and its inbox memo (undecoded)."""

    id: str
    groups: frozenset[str]
    memo: Payload | None


async def list_actions(client: Client, query: str, limit: int) -> list[Listed]:
    """Up to `limit` workflows matching a visibility query, in visibility's order."""
    listed: list[Listed] = []
    token = b""
    while len(listed) < limit:
        page = await client.workflow_service.list_workflow_executions(
            ListWorkflowExecutionsRequest(
                namespace=client.namespace,
                query=query,
                page_size=limit - len(listed),
                next_page_token=token,
            ),
            retry=True,  # as the SDK's own list does: a read, safe to ask again
        )
        listed += [listed_from(info) for info in page.executions]
        token = page.next_page_token
        if not token:
            break
    return listed[:limit]


def listed_from(info: WorkflowExecutionInfo) -> Listed:
    """The parts of a visibility row an inbox reads."""
    fields = info.search_attributes.indexed_fields
    groups: Sequence[str] = ()
    if sa.GROUPS.name in fields:
        one = SearchAttributes(indexed_fields={sa.GROUPS.name: fields[sa.GROUPS.name]})
        try:
            groups = decode_typed_search_attributes(one).get(sa.GROUPS) or ()
        except (ValueError, TypeError):  # not a keyword list: nobody's to decide from here
            groups = ()
    memo = info.memo.fields.get(INBOX_MEMO_KEY)
    return Listed(id=info.execution.workflow_id, groups=frozenset(groups), memo=memo)
