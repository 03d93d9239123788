"""A typical approval request, as an agent sends it (shared by the tests and the benchmark)."""

from typing import Any

REQUEST: dict[str, Any] = {
    "agent": "lead-router",
    "action": "opportunity.update_stage",
    "summary": "Move ACME to Closed Won",
    "target": {"system": "salesforce", "object": "Opportunity", "id": "006XYZ", "url": "https://crm.example/006XYZ"},
    "changes": [{"field": "StageName", "before": "Negotiation", "after": "Closed Won"}],
    "reason": "Signed contract received",
    "evidence": [{"label": "Contract", "url": "https://docs.example/contract.pdf"}],
    "requested_by": "U0REP",
    "params": {"id": "006XYZ", "stage": "Closed Won"},
}
