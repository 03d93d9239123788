"""`/agent why <id>`: the chain behind a record, newest first, answered privately in the command's
ack. Driven through signed slash commands against the real server; rows the agent API does not
write yet (an action's approval_id, a reviewer's edits, undos, rollbacks) are set in the database."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from sqlalchemy import select, update

from bot import why
from bot.approvals import decide as deciding
from local.slack import TEAM_ID, FakeSlack
from storage.tables import ActionRecord, AgentVersion, Approval
from tests import slackreq
from tests.helpers import T0, Running, ask, posted_card

pytestmark = pytest.mark.both_databases  # the server on SQLite and on PostgreSQL

TARGET = {"system": "salesforce", "object": "Opportunity", "id": "006XYZ", "url": "https://crm.example/006XYZ"}
STAGE = [{"field": "StageName", "before": "Negotiation", "after": "Closed Won"}]
AMOUNT = [{"field": "Amount", "before": 100, "after": 200}]


# --- driving it ---


def command(running: Running, text: str, user: str = "U0ANYONE", **fields: Any) -> dict[str, Any]:
    """`/agent <text>` as Slack sends it from the installation's workspace (unless `fields` say
    otherwise); the ack body."""
    form = dict(parse_qsl(slackreq.slash_command(text=text, user_id=user).decode(), keep_blank_values=True))
    form |= {"team_id": TEAM_ID} | fields
    response = running.slack_post(urlencode(form).encode())
    assert response.status_code == 200, response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        return dict(response.json())
    return {"text": response.text}


def texts(answer: dict[str, Any]) -> list[str]:
    """Each block's text, in order."""
    found = []
    for block in answer.get("blocks", []):
        if block["type"] == "section":
            found.append(block["text"]["text"])
        elif block["type"] == "context":
            found += [element["text"] for element in block["elements"]]
    return found


def shown(answer: dict[str, Any]) -> str:
    return "\n".join(texts(answer))


def within_limits(slack: FakeSlack, answer: dict[str, Any]) -> None:
    """What Slack takes in one message: Block Kit's schema, 50 blocks, 3000 characters a section,
    about 12,000 of text in all."""
    slack.checks.blocks(answer["blocks"])
    assert len(answer["blocks"]) <= 50
    assert all(len(text) <= 3000 for text in texts(answer))
    assert sum(len(text) for text in texts(answer)) <= 12_000


def decide(running: Running, approval_id: str, user: str, decision: deciding.Decision, reason: str | None) -> None:
    running.call(
        lambda: running.services.run(
            deciding.decide,
            config=running.services.config,
            approval_id=approval_id,
            user_id=user,
            user_groups=frozenset(),
            decision=decision,
            reason=reason,
            now=running.clock.now(),
        )
    )
    running.deliver_due()


def asked(running: Running, cards: int, **overrides: Any) -> str:
    """An approval request whose card is posted (the `cards`-th); its id."""
    created = ask(running, **({"target": TARGET, "version": "v7", "run_id": "run-1"} | overrides))
    posted_card(running.slack, cards)
    running.deliver_due()
    return str(created["id"])


def act(running: Running, changes: list[dict[str, Any]], approval_id: str | None = None, **fields: Any) -> str:
    body = {
        "agent": "lead-router",
        "action": "opportunity.update_stage",
        "target": TARGET,
        "changes": changes,
        "version": "v7",
        "run_id": "run-1",
    } | fields
    response = running.agent().post("/v1/actions", json=body)
    assert response.status_code == 201, response.text
    action_id = str(response.json()["id"])
    if approval_id:  # the approval the agent acted on (POST /v1/actions' approval_id)
        with running.services.db.transaction() as session:
            session.execute(update(ActionRecord).where(ActionRecord.id == action_id).values(approval_id=approval_id))
    return action_id


def register(running: Running, *versions: str) -> None:
    for version in versions:
        response = running.agent().post("/v1/agents/lead-router/versions", json={"version": version})
        assert response.status_code == 201, response.text


def report_run(running: Running, run_id: str, status: str) -> None:
    run = {"run_id": run_id, "status": status, "finished_at": running.clock.now().isoformat()}
    assert running.agent().post("/v1/runs", json=run).status_code == 202


def card_link(running: Running, approval_id: str) -> str:
    with running.services.db.transaction() as session:
        approval = session.get(Approval, approval_id)
        assert approval is not None and approval.message_ts
        channel, ts = approval.channel, approval.message_ts
    return f"<https://handrail-test.slack.com/archives/{channel}/p{ts.replace('.', '')}|Open the card>"


def history(running: Running) -> dict[str, str]:
    """On Opportunity 006XYZ, oldest first: a request approved with an edit and the stage change
    that carried it out (naming it); v7 rolled back to v6; a request denied; a request approved
    and the amount change after it (naming none: matched by target), then undone."""
    register(running, "v6", "v7")
    ids: dict[str, str] = {}
    ids["edited"] = asked(running, 1)
    running.clock.advance(timedelta(minutes=1))
    decide(running, ids["edited"], "U0REVIEWER", "approve", "Contract signed")
    with running.services.db.transaction() as session:
        session.execute(
            update(Approval)
            .where(Approval.id == ids["edited"])
            .values(
                proposed_params={"id": "006XYZ", "stage": "Closed Won", "discount_pct": 12},
                edits=[{"field": "discount_pct", "before": 12, "after": 8, "by": "U0REVIEWER"}],
                edited_by="U0REVIEWER",
                edited_at=running.clock.now(),
            )
        )
    running.clock.advance(timedelta(minutes=1))
    ids["stage"] = act(running, STAGE, approval_id=ids["edited"])
    report_run(running, "run-1", "succeeded")
    running.clock.advance(timedelta(minutes=10))
    with running.services.db.transaction() as session:
        v6 = session.scalars(select(AgentVersion).where(AgentVersion.version == "v6")).one()
        session.add(
            AgentVersion(
                agent="lead-router",
                version="v6",
                created_at=running.clock.now(),
                created_by="user:U0ONCALL",
                restores_id=v6.id,
            )
        )
    running.clock.advance(timedelta(minutes=10))
    ids["denied"] = asked(running, 2, run_id="run-2", summary="Discount ACME by 30%")
    with running.services.db.transaction() as session:  # someone the ladder reached said "I'm on it"
        session.execute(
            update(Approval)
            .where(Approval.id == ids["denied"])
            .values(acked_by="U0BACKUP", acked_at=running.clock.now())
        )
    decide(running, ids["denied"], "U0OWNER", "deny", "Too early for that discount")
    running.clock.advance(timedelta(minutes=10))
    ids["approved"] = asked(running, 3, run_id="run-2")
    decide(running, ids["approved"], "U0OWNER", "approve", None)
    running.clock.advance(timedelta(minutes=1))
    ids["amount"] = act(running, AMOUNT, run_id="run-2")
    running.clock.advance(timedelta(minutes=30))
    with running.services.db.transaction() as session:
        session.execute(
            update(ActionRecord)
            .where(ActionRecord.id == ids["amount"])
            .values(undo_status="undone", undone_by="U0ONCALL", undone_at=running.clock.now())
        )
    return ids


# --- the chain --------------------------------------------------------------------------------------


def test_a_target_shows_its_whole_chain_newest_first_privately_in_the_ack(running: Running, slack: FakeSlack) -> None:
    ids = history(running)
    calls = len(slack.calls)
    answer = command(running, "why 006XYZ")  # not "Working on it": the answer itself, within ACK_WITHIN
    assert answer.get("response_type", "ephemeral") == "ephemeral", "private to the asker"
    assert not slack.responses(), "answered in the ack itself, not later through the response_url"
    assert not [c for c in slack.calls[calls:] if c.method.startswith("chat.")], "nothing posted anywhere"
    within_limits(slack, answer)

    blocks = texts(answer)
    assert blocks[0].startswith(":mag: *Why* `006XYZ` (taken as a target id): the chain, newest first")
    assert blocks[1] == "*salesforce Opportunity* `006XYZ` · <https://crm.example/006XYZ|open> (crm.example)"
    amount, denied, stage = blocks[2], blocks[3], blocks[4]
    assert len(blocks) == 6 and blocks[5].startswith("The whole chain, for tools: `GET /v1/audit?target=006XYZ`")

    # The newest: the amount change, undone, behind the request approved just before it.
    assert amount.startswith(":memo: *Changed* (`opportunity.update_stage`) by *Lead router* · version `v7`")
    assert f"`{ids['amount']}`" in amount
    assert "run `run-2` (not reported)" in amount
    assert "• *Amount*: `100` → `200`" in amount
    assert ":leftwards_arrow_with_hook: Undone by <@U0ONCALL>" in amount
    assert f"Approval `{ids['approved']}` _(matched by target: the action named no approval)_" in amount
    assert ":white_check_mark: Approved by <@U0OWNER>" in amount
    assert ":rewind:" not in amount, "v7 was rolled back before this action, not after"

    # The denied request, on its own.
    assert denied.startswith(":speech_balloon: *Asked* to `opportunity.update_stage` · run `run-2`")
    assert f"Approval `{ids['denied']}`: :no_entry: Denied by <@U0OWNER>" in denied
    assert "Too early for that discount" in denied and "Summary: Discount ACME by 30%" in denied
    assert card_link(running, ids["denied"]) in denied
    assert ":raising_hand: <@U0BACKUP> said they were on it" in denied

    # The oldest: the stage change, the approval it named with the reviewer's edit, the rollback after it.
    assert "• *StageName*: `Negotiation` → `Closed Won`" in stage
    assert "run `run-1` (:white_check_mark: succeeded)" in stage
    assert ":rewind: Version `v7` rolled back to `v6` by <@U0ONCALL>" in stage
    assert f"Approval `{ids['edited']}`: :white_check_mark: Approved by <@U0REVIEWER>" in stage
    assert "matched by target" not in stage
    assert ": Contract signed" in stage
    assert "Asked by *Lead router* `v7` for <@U0REP>" in stage and "· policy `default`" in stage
    assert ":pencil2: Edited before approval" in stage
    assert "• *discount\u02cdpct*: `12` → `8` (edited by <@U0REVIEWER>)" in stage, (
        "formatting in field names is shown as is"
    )
    assert "Evidence: <https://docs.example/contract.pdf|Contract> (docs.example)" in stage
    assert card_link(running, ids["edited"]) in stage
    assert "The agent's reason: Signed contract received" in stage


def test_an_approval_an_action_and_a_run_each_lead_to_their_chain(running: Running, slack: FakeSlack) -> None:
    ids = history(running)

    by_approval = shown(command(running, f"why {ids['denied']}"))
    assert "(taken as an approval id)" in by_approval
    assert f"Approval `{ids['denied']}` ← _the one you asked about_: :no_entry: Denied by <@U0OWNER> " in by_approval
    assert by_approval.count("← _the one you asked about_") == 1
    assert "`100` → `200`" in by_approval, "the rest of the target's chain is there too"

    by_action = command(running, f"why {ids['stage']}")
    within_limits(slack, by_action)
    text = shown(by_action)
    assert "(taken as an action id)" in text
    marked = next(t for t in texts(by_action) if "← _the one you asked about_" in t)
    assert f"`{ids['stage']}`" in marked and "`Negotiation` → `Closed Won`" in marked

    by_run = command(running, "why run-1")
    text = shown(by_run)
    assert "(taken as a run id)" in text
    assert "Run of *Lead router*: :white_check_mark: *succeeded*" in text
    assert "`Negotiation` → `Closed Won`" in text and f"`{ids['edited']}`" in text
    assert "`100` → `200`" not in text and f"`{ids['denied']}`" not in text, "run-2's records are not run-1's"
    assert "GET /v1/audit?agent=lead-router" in text

    unreported = shown(command(running, "why run-2"))
    assert "*Lead router* recorded under this run id but reported no run." in unreported
    assert f"`{ids['denied']}`" in unreported and "`100` → `200`" in unreported


def test_an_id_nothing_has_gets_a_clear_answer(running: Running, slack: FakeSlack) -> None:
    ask(running, target=TARGET)
    answer = command(running, "why 006xyz")  # ids are case-sensitive
    assert answer["text"].startswith("Nothing recorded for `006xyz`: no approval, action, target or run has that id.")
    within_limits(slack, answer)
    assert command(running, "why apr_0000000000")["text"].startswith("Nothing recorded for `apr_0000000000`")
    usage = command(running, "why")["text"]
    assert usage.startswith("Give an id: a target's") and "Usage: `/agent why <target id|" in usage
    assert command(running, "why " + "x" * 201)["text"].startswith("An id is at most 200 characters.")


def test_a_target_id_of_several_systems_shows_each_target(running: Running) -> None:
    act(running, STAGE, target={"system": "salesforce", "object": "Opportunity", "id": "42"})
    running.clock.advance(timedelta(minutes=1))
    act(running, AMOUNT, target={"system": "stripe", "object": "Invoice", "id": "42"})
    blocks = texts(command(running, "why 42"))
    assert blocks[1] == "*stripe Invoice* `42`" and "`100` → `200`" in blocks[2], "the newest target first"
    assert blocks[3] == "*salesforce Opportunity* `42`" and "`Negotiation` → `Closed Won`" in blocks[4]


def test_what_agents_and_people_wrote_is_escaped(running: Running, slack: FakeSlack) -> None:
    target = {"system": "<!channel>", "object": "*Deal*", "id": "a&b<c>", "url": "https://crm.example/x?a=1&b=2"}
    approval = ask(
        running,
        target=target,
        summary="<!everyone> look",
        reason="@here <https://evil.example|your bank>",
        evidence=[{"label": "<@U0BOSS> said so", "url": "https://proof.example/p"}],
        run_id="`rm -rf`",
    )["id"]
    posted_card(slack)
    running.deliver_due()
    decide(running, approval, "U0REVIEWER", "deny", "<!subteam^S0DEALDESK> *no*")
    act(
        running,
        [{"field": "_stage_", "before": "<https://evil.example|ok>", "after": "@channel"}],
        target=target,
        version="v<1>",
        run_id="`rm -rf`",
    )
    answer = command(running, "why a&b<c>")
    within_limits(slack, answer)
    text = shown(answer)
    for raw in ("<!channel>", "<!everyone>", "<!subteam", "<@U0BOSS>", "<https://evil", "@here", "@channel", "<c>"):
        assert raw not in text, raw
    assert "`a&amp;b&lt;c&gt;`" in text, "the id asked about"
    assert "&lt;!channel&gt;" in text and "&lt;!everyone&gt; look" in text
    assert "&lt;!subteam^S0DEALDESK&gt;" in text and "∗no∗" in text, "a person's reason: no formatting either"
    assert "&lt;https://evil.example|ok&gt;" in text and "`v&lt;1&gt;`" in text
    assert "<https://proof.example/p|&lt;@U0BOSS&gt; said so> (proof.example)" in text, "evidence only as a link"
    assert "<https://crm.example/x?a=1&amp;b=2|open> (crm.example)" in text


def test_a_target_with_200_actions_is_cut_to_one_message_with_the_pointer(running: Running, slack: FakeSlack) -> None:
    with running.services.db.transaction() as session:
        for i in range(200):
            session.add(
                ActionRecord(
                    id=f"act_{i:020d}",
                    agent="lead-router",
                    action="opportunity.update_stage",
                    target=TARGET,
                    target_id="006XYZ",
                    changes=[{"field": f"f{n}", "before": "x" * 300, "after": i} for n in range(8)],
                    run_id=f"run-{i}",
                    reversible=True,
                    request_sha256="0" * 64,
                    created_at=T0 - timedelta(minutes=200 - i),
                    version="v7",
                )
            )
    answer = command(running, "why 006XYZ")
    within_limits(slack, answer)
    blocks = texts(answer)
    assert "`act_00000000000000000199`" in blocks[2], "the newest first"
    assert "`act_00000000000000000000`" not in shown(answer)
    shown_entries = sum(text.startswith(":memo:") for text in blocks)
    assert 5 <= shown_entries < 50
    assert blocks[-1] == (
        f"_Cut to fit Slack: the newest {shown_entries} of 50 or more entries._ The whole chain: "
        "`GET /v1/audit?target=006XYZ`"
    )
    assert "• …and 3 more" in blocks[2], "an action's changes are cut too"
    assert json.dumps(answer).count("x" * 300) == 0, "long values are cut"


# --- who may ask -----------------------------------------------------------------------------------


def test_anyone_in_the_workspace_may_ask_and_nobody_from_outside_it(running: Running) -> None:
    ask(running, target=TARGET)
    assert "*Why* `006XYZ` (taken as a target id)" in shown(command(running, "why 006XYZ", user="U0SOMEONE"))
    refused = "Only people in the workspace Handrail is installed in may ask `/agent why`; nothing was looked up."
    # Slack's recorded payload: another workspace (T111) of another organisation (E111).
    assert command(running, "why 006XYZ", team_id="T111")["text"] == refused
    # A workspace of an organisation where the app is installed organisation-wide, but not ours.
    other_org = {"team_id": "T0OTHER", "enterprise_id": "E0OTHER", "is_enterprise_install": "true"}
    assert command(running, "why 006XYZ", **other_org)["text"] == refused
    assert (
        "• `/agent why <target id|approval id|action id|run id>`: why a record changed"
        in command(running, "help")["text"]
    )


def test_an_organisation_wide_install_takes_every_workspace_of_its_organisation() -> None:
    home = why.Workspace(team_id="T0HOME", enterprise_id="E0ORG")
    why.insider(why.Workspace("T0HOME"), home)
    why.insider(why.Workspace("T0SISTER", "E0ORG", org_install=True), home)
    for outsider in (
        why.Workspace("T0SISTER", "E0ORG"),  # the app is not installed for the organisation
        why.Workspace("T0FAR", "E0FAR", org_install=True),
        why.Workspace(None),
        None,
    ):
        with pytest.raises(why.Outsider):
            why.insider(outsider, home)
    with pytest.raises(why.Outsider):  # the installation's own workspace unknown: fail closed
        why.insider(why.Workspace("T0HOME"), None)
