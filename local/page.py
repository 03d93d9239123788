"""The /local page: a small Slack-like client over the stand-in Slack, for trying Handrail without
a Slack workspace.

It shows what the bot wrote (every conversation, thread replies, edits, the acting person's
ephemeral messages, their open modal) rendered from Block Kit on the server, and acts as Slack
does: a click, a modal's submit or close, and a slash command become the signed requests Slack
would send to /slack/events (local/payloads.py), and the synchronous answer is handled as Slack
handles it. The browser is trusted with nothing: it names a button by its message and ids, and the
page finds the button in the stored message; it names a modal, and the page builds the submitted
state from the stored view.

Live updates are a long poll: GET /local/view waits until the stand-in's version passes the one
the page has, then answers the re-rendered fragments. A poll ends within `POLL_SECONDS`, so a
stopping server never waits long on an open page.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from bot.clock import Clock, SystemClock
from local import payloads, render
from local.slack import FakeSlack
from local.workspace import APP_ID, TEAM_ID

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
POLL_SECONDS = 20.0
COOKIE = "handrail_local_as"
COMMANDS = ("/agent",)  # the commands the app registers
WORKSPACE = payloads.Workspace(team_id=TEAM_ID, team_domain="handrail-local", app_id=APP_ID)
ID = re.compile(r"[A-Z0-9]{1,40}")

Id = Annotated[str, StringConstraints(pattern=f"^{ID.pattern}$")]  # pydantic's patterns are not anchored
Key = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Ts = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}\.[0-9]{1,8}$")]
Value = Annotated[str, StringConstraints(max_length=3000)]


@dataclass(frozen=True)
class Person:
    """Someone the page can act as; `about` says what they are (e.g. "owner of lead-router · approver")."""

    id: str
    name: str
    about: str = ""


class _Act(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: Id


class Click(_Act):
    """A button clicked, or an option chosen in a message's select (`value`)."""

    kind: Literal["click"]
    channel: Id
    ts: Ts
    ephemeral: bool = False
    block_id: Key
    action_id: Key
    value: Value | None = None


class Submit(_Act):
    kind: Literal["submit"]
    view_id: Id
    values: dict[Key, dict[Key, Value | list[Value] | None]] = Field(default={}, max_length=100)


class Close(_Act):
    kind: Literal["close"]
    view_id: Id


class Command(_Act):
    kind: Literal["command"]
    channel: Id
    text: Annotated[str, StringConstraints(min_length=1, max_length=4000)]


Act = Annotated[Click | Submit | Close | Command, Field(discriminator="kind")]
_acts: TypeAdapter[Click | Submit | Close | Command] = TypeAdapter(Act)


class Refused(Exception):
    """An act the page does not send: answered with `status` and the reason, shown to the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def environment(names: dict[str, str]) -> Environment:
    """Jinja2 with autoescape, and Slack's text formats as filters that escape what they show;
    mentions show the `names` of ids."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    env.filters["mrkdwn"] = lambda text: render.mrkdwn_html(text if isinstance(text, str) else "", names)
    env.filters["plain"] = lambda text, emoji=True: render.plain_html(text if isinstance(text, str) else "", emoji)
    env.filters["safe_url"] = lambda url: isinstance(url, str) and url.lower().startswith(render.LINK_SCHEMES)
    return env


def page_router(
    fake: FakeSlack,
    *,
    people: list[Person],
    names: dict[str, str],
    signing_secret: str,
    events_url: str,
    demo: Callable[[], Coroutine[Any, Any, None]] | None = None,
    home_channel: str | None = None,
    clock: Clock = SystemClock(),
) -> APIRouter:
    """The /local page and what it calls. `people[0]` acts unless the page chose another;
    `names` maps user, group and channel ids to the names mentions show; `home_channel` (else the
    stand-in's first named channel) is shown before the bot has written anywhere; requests are
    signed at `clock`'s time (the app checks signatures against its own clock)."""
    if not people:
        raise ValueError("the page needs at least one person to act as")
    page = _Page(fake, people, names, signing_secret, events_url, home_channel, clock)
    router = APIRouter()
    demo_tasks: set[asyncio.Task[None]] = set()

    @router.get("/local", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request) -> Response:
        person = page.person(request.query_params.get("as") or request.cookies.get(COOKIE))
        channel = page.channel(request.query_params.get("c"))
        body = page.template("page.html").render(**page.context(person, channel), people=people, demo=demo is not None)
        response = HTMLResponse(body, headers={"Cache-Control": "no-store"})
        response.set_cookie(COOKIE, person.id, httponly=True, samesite="strict")
        return response

    @router.get("/local/view", include_in_schema=False)
    async def view(request: Request) -> JSONResponse:
        """The fragments, once the stand-in has changed since `after` (or at once without it)."""
        person = page.person(request.query_params.get("as"))
        channel = page.channel(request.query_params.get("c"))
        after = request.query_params.get("after", "")
        if after.lstrip("-").isdigit():
            await page.changes.wait_past(int(after), POLL_SECONDS)
        return JSONResponse(page.fragments(person, channel), headers={"Cache-Control": "no-store"})

    @router.post("/local/act", include_in_schema=False)
    async def act(request: Request) -> JSONResponse:
        if refusal := _cross_site(request):
            return refusal
        try:
            done = await page.act(_acts.validate_json(await request.body()))
        except ValidationError as error:
            return JSONResponse({"ok": False, "error": _problems(error)}, status_code=422)
        except Refused as refused:
            return JSONResponse({"ok": False, "error": refused.message}, status_code=refused.status)
        return JSONResponse(done)

    @router.post("/local/demo", include_in_schema=False)
    async def run_demo(request: Request) -> JSONResponse:
        if refusal := _cross_site(request):
            return refusal
        if demo is None:
            return JSONResponse({"ok": False, "error": "no demo agent in this server"}, status_code=404)
        if demo_tasks:
            return JSONResponse({"ok": True, "message": "The demo agent is already running."})
        task = asyncio.create_task(demo())
        demo_tasks.add(task)
        task.add_done_callback(_demo_ended(demo_tasks))
        return JSONResponse({"ok": True, "message": "The demo agent started: watch the channels on the left."})

    router.mount("/local/static", StaticFiles(directory=HERE / "static"), name="local-static")
    return router


def _cross_site(request: Request) -> JSONResponse | None:
    """Refuse what another site's page could make a browser send here. A form or a `text/plain`
    fetch from elsewhere goes without asking; a JSON one must pass CORS, which this app never
    grants. And a browser names the page's origin, which must be this server's."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return JSONResponse({"ok": False, "error": "send JSON (Content-Type: application/json)"}, status_code=415)
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
        return JSONResponse({"ok": False, "error": "requests from other sites are refused"}, status_code=403)
    return None


def _demo_ended(tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def ended(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception():
            log.error("the demo agent stopped", exc_info=task.exception())

    return ended


def _problems(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}" for item in error.errors()[:5]
    )


class Changes:
    """Wakes long polls when the stand-in changes. The stand-in calls back from whatever thread
    changed it; the wake-up is handed to the event loop."""

    def __init__(self, fake: FakeSlack) -> None:
        self.fake = fake
        self._waiters: set[asyncio.Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _listen(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self.fake.on_change(self._changed)

    def _changed(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_past(self, version: int, timeout: float) -> None:
        """Return once the version is past `version`, or after `timeout` seconds."""
        self._listen()
        deadline = asyncio.get_running_loop().time() + timeout
        while self.fake.version <= version:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                if self.fake.version > version:  # changed between the check and registering
                    return
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return
            finally:
                self._waiters.discard(waiter)


class _Page:
    def __init__(
        self,
        fake: FakeSlack,
        people: list[Person],
        names: dict[str, str],
        signing_secret: str,
        events_url: str,
        home_channel: str | None,
        clock: Clock,
    ) -> None:
        self.fake = fake
        self.people = {person.id: person for person in people}
        self.default = people[0]
        self.names = {**{person.id: person.name for person in people}, **names}
        self.signing_secret = signing_secret
        self.events_url = events_url
        self.home_channel = home_channel
        self.clock = clock
        self.env = environment(self.names)
        self.changes = Changes(fake)

    def template(self, name: str) -> Any:
        return self.env.get_template(name)

    # -- who and where ---------------------------------------------------------------------------

    def person(self, user_id: str | None) -> Person:
        return self.people.get(user_id or "", self.default)

    def channel(self, channel_id: str | None) -> str | None:
        if channel_id and ID.fullmatch(channel_id):
            return channel_id
        conversations = self.fake.conversations()
        if conversations:
            return str(conversations[0]["id"])
        return self.home_channel or next(iter(self.fake.channel_names), None)

    def conversation_name(self, channel_id: str) -> str:
        """A conversation's name: the configured one, else the stand-in's (a DM is named after its person)."""
        return str(self.conversation(channel_id)["name"])

    def conversation(self, channel_id: str) -> dict[str, Any]:
        found = next((c for c in self.fake.conversations() if c["id"] == channel_id), None)
        return self._conversation(found or {"id": channel_id, "kind": "dm" if channel_id[:1] == "D" else "channel"})

    # -- what the page shows ---------------------------------------------------------------------

    def context(self, person: Person, channel: str | None) -> dict[str, Any]:
        version = self.fake.version  # read first: a change after it is caught by the next poll
        return {
            "version": version,
            "me": person,
            "channel": channel,
            "current": self.conversation(channel) if channel else None,
            "conversations": [self._conversation(c) for c in self.fake.conversations()],
            "messages": self._messages(person, channel) if channel else [],
            "modal": self._modal(person),
        }

    def fragments(self, person: Person, channel: str | None) -> dict[str, Any]:
        context = self.context(person, channel)
        modal = context["modal"]
        return {
            "version": context["version"],
            "sidebar": self.template("sidebar.html").render(**context),
            "messages": self.template("messages.html").render(**context),
            "modal": self.template("modal.html").render(**context),
            "modal_key": f"{modal['id']}:{modal.get('hash', '')}" if modal else "",
        }

    def _conversation(self, conversation: dict[str, Any]) -> dict[str, Any]:
        kind, user = conversation.get("kind", "channel"), conversation.get("user")
        name = self.names.get(user) if kind == "dm" and user else self.names.get(conversation["id"])
        return {"id": conversation["id"], "kind": kind, "name": name or conversation.get("name") or conversation["id"]}

    def _messages(self, person: Person, channel: str) -> list[dict[str, Any]]:
        """Top-level messages and the person's ephemerals, oldest first, each with its replies."""
        shown = self.fake.history(channel, person.id)
        for message in shown:
            replied = message.get("reply_count")
            message["replies"] = self.fake.thread(channel, message["ts"], person.id) if replied else []
        return shown

    def _modal(self, person: Person) -> dict[str, Any] | None:
        views = self.fake.open_views(person.id)
        return views[-1] if views else None

    # -- acting ----------------------------------------------------------------------------------

    async def act(self, act: Click | Submit | Close | Command) -> dict[str, Any]:
        person = self.people.get(act.user)
        if person is None:
            raise Refused(403, "that person is not one the page can act as")
        actor = payloads.Actor(person.id, person.name)
        match act:
            case Click():
                return await self._click(actor, act)
            case Submit():
                return await self._submit(actor, act)
            case Close():
                return await self._close(actor, act)
            case Command():
                return await self._command(actor, act)

    async def _click(self, actor: payloads.Actor, click: Click) -> dict[str, Any]:
        key = (click.channel, click.ts)
        stored = self.fake.ephemerals.get(key) if click.ephemeral else self.fake.messages.get(key)
        if stored is None or (click.ephemeral and stored.get("user") != actor.id):
            raise Refused(404, "that message is gone")
        element = _find_element(stored.get("blocks") or [], click.block_id, click.action_id)
        if element is None or element.get("type") not in ("button", "static_select") or element.get("url"):
            raise Refused(404, "that message has no such button")
        selected = None
        if element["type"] == "static_select":
            selected = next((o for o in _options(element) if o.get("value") == click.value), None)
            if selected is None:
                raise Refused(422, "that choice is not one of the select's options")
        action_ts = f"{self.clock.now().timestamp():.6f}"
        used = payloads.action(click.block_id, element, action_ts=action_ts, selected=selected)
        body = payloads.block_actions(
            WORKSPACE,
            actor,
            channel_id=click.channel,
            channel_name=self.conversation_name(click.channel),
            message_ts=click.ts,
            message=None if click.ephemeral else stored,
            used=used,
            trigger_id=self.fake.trigger_id(actor.id),
            response_url=self.fake.response_url(
                "actions", channel=click.channel, user=actor.id, message_ts=click.ts, ephemeral=click.ephemeral
            ),
        )
        answer = await self._send(body)
        self._ephemeral_answer(click.channel, actor.id, answer)
        return {"ok": True}

    async def _command(self, actor: payloads.Actor, command: Command) -> dict[str, Any]:
        name, _, text = command.text.strip().partition(" ")
        if name not in COMMANDS:
            raise Refused(422, f"this page sends only {', '.join(COMMANDS)} commands")
        body = payloads.slash_command(
            WORKSPACE,
            actor,
            command=name,
            text=text.strip(),
            channel_id=command.channel,
            channel_name=self.conversation_name(command.channel),
            response_url=self.fake.response_url("commands", channel=command.channel, user=actor.id),
            trigger_id=self.fake.trigger_id(actor.id),
        )
        answer = await self._send(body)
        self._ephemeral_answer(command.channel, actor.id, answer)
        return {"ok": True}

    async def _submit(self, actor: payloads.Actor, submit: Submit) -> dict[str, Any]:
        view = self._open_view(actor.id, submit.view_id)
        values, errors = _state_values(view.get("blocks") or [], submit.values)
        if errors:  # Slack checks required fields and lengths before it sends anything
            return {"ok": False, "errors": errors}
        submitted = {**view, "state": {"values": values}}
        body = payloads.view_submission(WORKSPACE, actor, view=submitted, trigger_id=self.fake.trigger_id(actor.id))
        answer = await self._send(body)
        errors = self.fake.after_submission(submit.view_id, answer)
        return {"ok": not errors, **({"errors": errors} if errors else {})}

    async def _close(self, actor: payloads.Actor, close: Close) -> dict[str, Any]:
        view = self._open_view(actor.id, close.view_id)
        self.fake.close_view(close.view_id)
        if view.get("notify_on_close"):
            await self._send(payloads.view_closed(WORKSPACE, actor, view=view))
        return {"ok": True}

    def _open_view(self, user_id: str, view_id: str) -> dict[str, Any]:
        for view in self.fake.open_views(user_id):
            if view.get("id") == view_id:
                return view
        raise Refused(404, "that form is closed")

    async def _send(self, body: bytes) -> dict[str, Any]:
        """POST a signed request to /slack/events as Slack does; its answer (an ack's JSON body, or
        {}). Anything but a 2xx is refused with what Handrail answered."""
        headers = payloads.sign(body, self.signing_secret, int(self.clock.now().timestamp()))
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.post(self.events_url, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise Refused(502, f"Handrail did not answer: {type(error).__name__}") from None
        if not response.is_success:
            raise Refused(502, f"Handrail answered {response.status_code}: {response.text[:200]}")
        if not response.content.strip():
            return {}
        try:
            answer = response.json()
        except json.JSONDecodeError:
            return {"text": response.text}  # Slack shows a plain-text ack body as the reply
        return answer if isinstance(answer, dict) else {}

    def _ephemeral_answer(self, channel: str, user_id: str, answer: dict[str, Any]) -> None:
        """An ack with text or blocks is what Slack shows the person, and only them."""
        text, blocks = answer.get("text"), answer.get("blocks")
        if isinstance(text, str) and text or isinstance(blocks, list) and blocks:
            self.fake.record_ephemeral(
                channel, user_id, text if isinstance(text, str) else "", blocks if isinstance(blocks, list) else None
            )


def _elements(blocks: Iterable[Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    """(block_id, element) for every interactive element of the blocks: accessories, actions'
    elements, inputs' elements."""
    for block in blocks:
        if not isinstance(block, dict):
            continue
        block_id = str(block.get("block_id", ""))
        candidates = [block.get("accessory"), block.get("element"), *(block.get("elements") or [])]
        for element in candidates:
            if isinstance(element, dict) and "action_id" in element:
                yield block_id, element


def _find_element(blocks: list[Any], block_id: str, action_id: str) -> dict[str, Any] | None:
    return next((el for bid, el in _elements(blocks) if bid == block_id and el.get("action_id") == action_id), None)


def _options(element: dict[str, Any]) -> list[dict[str, Any]]:
    return [option for option in element.get("options") or [] if isinstance(option, dict)]


REQUIRED = "Please complete this required field."


def _state_values(
    blocks: list[Any], submitted: dict[str, dict[str, str | list[str] | None]]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The view's `state.values` built from its own input blocks and the person's choices, and the
    errors Slack itself shows before sending (a required field left empty, too long a text, a
    choice the element does not offer). Values for inputs the view lacks are ignored."""
    values: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") != "input" or not isinstance(block.get("element"), dict):
            continue
        block_id, element = str(block.get("block_id", "")), block["element"]
        action_id = str(element.get("action_id", ""))
        chosen = submitted.get(block_id, {}).get(action_id)
        state = payloads.input_state(element, chosen)
        filled = state.get("value") or state.get("selected_option") or state.get("selected_options")
        offered = {option.get("value") for option in _options(element)}
        picked = [chosen] if isinstance(chosen, str) else list(chosen or [])
        if element.get("type") == "plain_text_input":
            text = state["value"] or ""
            if isinstance(element.get("max_length"), int) and len(text) > element["max_length"]:
                errors[block_id] = f"Please keep this within {element['max_length']} characters."
            elif isinstance(element.get("min_length"), int) and text and len(text) < element["min_length"]:
                errors[block_id] = f"Please write at least {element['min_length']} characters."
        elif any(value not in offered for value in picked if value):
            errors[block_id] = "Please choose one of the options."
        if not filled and not block.get("optional") and block_id not in errors:
            errors[block_id] = REQUIRED
        values.setdefault(block_id, {})[action_id] = state
    return values, errors
