"""A stand-in for Slack's Web API: the tests' fake Slack and local mode's Slack, one implementation.

It answers the methods the bot uses the way Slack does, records every call, and checks each call
against artifacts Slack (and others) published in ../shared/slack (local.checks). Every problem
found is appended to `violations` and answered with the error Slack would return.

It also keeps what a Slack client would show (local.workspace), so that local mode's page can draw
it: messages and thread replies (edits marked), ephemeral messages per user, answers posted to
response_urls, the conversations the bot wrote to, open modals per user and Home tabs. Every change
bumps `version` and calls the callbacks registered with `on_change` (after the lock is released,
from the thread that made the change). Read that state through the methods that copy it
(`history`, `thread`, `conversations`, `open_views`, `home_view`): other threads change the dicts.

Requests arrive over a threaded HTTP server on loopback (`start()`, for tests) or through FastAPI
routes mounted in the app (`router(fake)` with `fake.mounted_at(url)`, for local mode); see
local.transport.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from local.checks import DEFAULT_SLACK_DIR, Checks, SlackError
from local.transport import API_PREFIX, DROPPED, HOOKS_PREFIX, Malformed, Outcome, ThreadedServer, asgi_router
from local.workspace import (
    BOT_ID,
    BOT_USER_ID,
    TEAM_ID,
    Hook,
    Message,
    Workspace,
    conversation_id,
    dm_id,
    flag,
    is_block_list,
)

__all__ = ["BOT_ID", "BOT_USER_ID", "DEFAULT_SLACK_DIR", "RESPONSE_URL", "TEAM_ID", "Call", "FakeSlack", "router"]

log = logging.getLogger(__name__)

RESPONSE_URL_USES = 5  # Slack takes five messages per response_url
RESPONSE_URL = "response_url"  # Call.method of a message posted to a response_url

# Slack's docs need one of these fields although the 2020 spec marks none of them required.
ONE_OF: dict[str, tuple[tuple[str, ...], str]] = {
    "chat.postMessage": (("text", "blocks", "attachments"), "no_text"),
    "chat.update": (("text", "blocks", "attachments"), "no_text"),
    "chat.postEphemeral": (("text", "blocks", "attachments"), "no_text"),
    "conversations.open": (("users", "channel"), "users_list_not_supplied"),
    "users.info": (("user",), "user_not_found"),
    "views.update": (("view_id", "external_id"), "invalid_arguments"),
}
# Parameters read as text: a number or an object there is refused as Slack refuses it, not a crash.
TEXT_PARAMS = (
    "channel",
    "ts",
    "message_ts",
    "thread_ts",
    "user",
    "user_id",
    "usergroup",
    "trigger_id",
    "view_id",
    "external_id",
    "hash",
    "text",
    "response_type",
)

Params = dict[str, Any]
Answer = dict[str, Any]


@dataclass
class Call:
    method: str
    params: Params
    token: str | None
    status: int
    response: Answer
    received_at: float = 0.0  # time.perf_counter() when the request arrived


@dataclass(frozen=True)
class Limit:
    """A rate Slack enforces: `per_second` on average, `burst` calls at once after a quiet spell."""

    per_second: float
    burst: int


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class Enforced:
    """Slack's rate limits, enforced on receipt times: chat.postMessage per channel (about 1 a
    second with short bursts), chat.update per workspace (Tier 3: about 50 a minute). A call
    arriving up to `grace` seconds early still passes: receipt times carry the network's jitter,
    and Slack's own limits are not that sharp either."""

    post: Limit
    update: Limit
    grace: float = 0.0
    retry_after: int = 1
    buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict)

    def admits(self, method: str, params: Params, at: float) -> bool:
        if method == "chat.postMessage":
            limit, key = self.post, (method, conversation_id(str(params.get("channel"))))
        elif method == "chat.update":
            limit, key = self.update, (method, "")
        else:
            return True
        bucket = self.buckets.setdefault(key, _Bucket(float(limit.burst), at))
        tokens = min(float(limit.burst), bucket.tokens + max(0.0, at - bucket.at) * limit.per_second)
        bucket.at = max(at, bucket.at)
        if tokens + self.grace * limit.per_second < 1:
            bucket.tokens = tokens
            return False
        bucket.tokens = tokens - 1  # below zero within the grace: the next call waits the longer
        return True


@dataclass
class _Every:
    """Fail every n-th call of the methods (all methods when empty), counting from the next one."""

    n: int
    outcome: Outcome
    methods: frozenset[str]
    seen: int = 0


class FakeSlack:
    def __init__(
        self,
        slack_dir: Path | None = DEFAULT_SLACK_DIR,
        *,
        check_blocks: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] | None = None,
        max_calls: int | None = None,
    ) -> None:
        """slack_dir=None checks nothing from Slack's reference data (`checking` is False); tests
        always check. check_blocks=False skips the Block Kit schema, for benchmarks. `monotonic`
        times trigger_ids. With `wall_clock`, message ts follow it (local mode shows times); without,
        they count up from 2023 so that tests are repeatable. `max_calls` bounds `calls`, which
        otherwise grows with every call (a long local session)."""
        self.checks = Checks(slack_dir, check_blocks=check_blocks)
        self.slack_dir = slack_dir
        self.checking = self.checks.active
        self.workspace = Workspace(self.checks, monotonic, wall_clock)
        self._max_calls = max_calls
        self._handlers: dict[str, Callable[[Params], Answer]] = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
            "chat.update": self._update_message,
            "chat.getPermalink": self._permalink,
            "chat.postEphemeral": self._post_ephemeral,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "conversations.open": self._open_conversation,
            "conversations.history": self._conversation_history,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroup_users,
        }
        self._required = {method: self.checks.required(method) for method in self._handlers}
        self._cond = threading.Condition()
        self._listeners: list[Callable[[], None]] = []
        self._failures: dict[str, list[Outcome]] = defaultdict(list)
        self._every: _Every | None = None
        self._holds: dict[str, list[threading.Event]] = defaultdict(list)
        self._drops: dict[str, int] = defaultdict(int)
        self.enforced: Enforced | None = None  # Slack's rate limits, when a test asks for them
        self._port = 0
        self._response_uses: dict[str, int] = defaultdict(int)
        self._server: ThreadedServer | None = None
        self.base_url = ""
        self.root_url = ""
        self.socket_url: str | None = None  # answered by apps.connections.open (Socket Mode)
        self.calls: list[Call] = []
        self.violations: list[str] = []
        self.usergroup_members: dict[str, list[str]] = {}
        # The workspace's own dicts, for tests to read and arrange as before.
        self.messages = self.workspace.messages
        self.ephemerals = self.workspace.ephemerals
        self.views = self.workspace.views
        self.home_views = self.workspace.home_views
        self.channel_names = self.workspace.channel_names  # local mode fills it from the config
        self.users = self.workspace.users

    @classmethod
    def checked_if_available(
        cls, slack_dir: Path = DEFAULT_SLACK_DIR, *, wall_clock: Callable[[], float] | None = time.time
    ) -> FakeSlack:
        """Local mode's stand-in: it checks calls when Slack's reference data is beside the project
        (this workspace) and runs unchecked in a clone without it, rather than refusing to start."""
        return cls(slack_dir if slack_dir.is_dir() else None, wall_clock=wall_clock, max_calls=1000)

    @property
    def version(self) -> int:
        """Bumped by every change to what a client shows."""
        return self.workspace.version

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._server = ThreadedServer(self, self._port)
        self._port = self._server.port
        self.mounted_at(self._server.root_url)

    def go_offline(self) -> None:
        """Slack cannot be reached: the port refuses connections (and connections kept alive are
        dropped) until `come_back()`."""
        assert self._server is not None, "go_offline() needs the stand-in's own server (start())"
        self._server.stop()
        self._server = None

    def come_back(self) -> None:
        """Listen again, on the same port."""
        self.start()

    def mounted_at(self, root_url: str) -> None:
        """Where the stand-in answers: its own server's URL, or where the app mounts `router(self)`
        (local mode: http://127.0.0.1:<port>/local/slack). base_url and response_urls follow it."""
        self.root_url = root_url.rstrip("/")
        self.base_url = self.root_url + API_PREFIX

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeSlack:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what tests read and arrange ---------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        with self._cond:
            return [call for call in self.calls if call.method == method]

    def wait_for(self, predicate: Callable[[list[Call]], bool], timeout: float = 5.0) -> list[Call]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.calls), timeout):
                methods = [call.method for call in self.calls]
                raise AssertionError(f"no matching Slack call within {timeout}s; calls so far: {methods}")
            return list(self.calls)

    def responses(self) -> list[Call]:
        """Messages posted to response_urls, oldest first; `params["url"]` says which."""
        return self.calls_to(RESPONSE_URL)

    def rate_limit_next(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        failure = Outcome(429, {"Retry-After": str(retry_after)}, {"ok": False, "error": "ratelimited"})
        self._queue(method, failure, times)

    def fail_next(self, method: str, error: str, times: int = 1) -> None:
        self._queue(method, Outcome(200, {}, {"ok": False, "error": error}), times)

    def rate_limit_every(self, n: int, retry_after: int = 1, methods: Iterable[str] = ()) -> None:
        """Answer every n-th call (of `methods`, or of any method) with 429 and Retry-After, until
        `stop_rate_limiting()`."""
        failure = Outcome(429, {"Retry-After": str(retry_after)}, {"ok": False, "error": "ratelimited"})
        with self._cond:
            self._every = _Every(n, failure, frozenset(methods))

    def stop_rate_limiting(self) -> None:
        with self._cond:
            self._every = None

    def enforce_limits(self, post: Limit, update: Limit, *, grace: float = 0.0) -> None:
        """From now on, answer 429 to calls beyond Slack's rate limits (see Enforced)."""
        with self._cond:
            self.enforced = Enforced(post, update, grace)

    def drop_answer(self, method: str, times: int = 1) -> None:
        """The next `times` calls of `method` are taken (processed and recorded, with status
        DROPPED) and their connection closed without an answer: Slack has them, the caller
        cannot know."""
        with self._cond:
            self._drops[method] += times

    def hold_answer(self, method: str) -> threading.Event:
        """The next call of `method` is processed and recorded as usual, but its answer waits until
        the returned event is set: Slack has taken it, the caller has not heard back yet."""
        release = threading.Event()
        with self._cond:
            self._holds[method].append(release)
        return release

    def reset(self) -> None:
        """Forget calls, violations and queued failures; posted messages, users and groups stay."""
        with self._cond:
            self.calls.clear()
            self.violations.clear()
            self._failures.clear()
            self._every = None
            self.enforced = None
            for held in self._holds.values():
                for release in held:
                    release.set()
            self._holds.clear()
            self._drops.clear()

    def _queue(self, method: str, failure: Outcome, times: int) -> None:
        with self._cond:
            self._failures[method].extend([failure] * times)

    # -- what a Slack client shows (local mode's page) ---------------------------------------

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback()` after every change to what a client shows; returns a function that
        unregisters it. It runs on the thread that made the change, so it must only hand off
        (e.g. loop.call_soon_threadsafe)."""
        with self._cond:
            self._listeners.append(callback)

        def remove() -> None:
            with self._cond:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return remove

    def conversations(self) -> list[dict[str, Any]]:
        """Every conversation the bot wrote to or opened: {"id", "kind": "channel" | "dm" | "group",
        "name", "user" (dm) or "users" (group)}, channels first, then by name."""
        with self._cond:
            return self.workspace.conversations()

    def history(self, channel: str, user: str | None = None) -> list[Message]:
        """Top-level messages of a conversation, oldest first, each with its `reply_count`; with
        `user`, that user's ephemeral messages too (marked `"ephemeral": True`)."""
        with self._cond:
            return self.workspace.history(conversation_id(channel), user)

    def thread(self, channel: str, ts: str, user: str | None = None) -> list[Message]:
        """Replies posted with thread_ts=ts, oldest first (the parent is not included); with `user`,
        that user's ephemeral replies too."""
        with self._cond:
            return self.workspace.thread(conversation_id(channel), ts, user)

    def open_views(self, user: str) -> list[dict[str, Any]]:
        """The user's open modals as Slack answered them, the top one last."""
        with self._cond:
            return self.workspace.open_views(user)

    def home_view(self, user: str) -> dict[str, Any] | None:
        with self._cond:
            return copy.deepcopy(self.workspace.home_views.get(user))

    def trigger_id(self, user: str) -> str:
        """A trigger_id for a click or a command of `user`, shaped like Slack's: views.open takes it
        once, within 3 seconds, and the modal opens for that user."""
        with self._cond:
            return self.workspace.mint_trigger(user)

    def response_url(
        self,
        kind: str = "commands",
        *,
        channel: str | None = None,
        user: str | None = None,
        message_ts: str | None = None,
        ephemeral: bool = False,
    ) -> str:
        """A fresh response_url, as Slack puts in a slash command or a click. Given the channel (and
        the user, and the message clicked, and whether it was ephemeral), its answers land there as
        Slack's would; without, they are only recorded."""
        with self._cond:
            rest = self.workspace.hook_path(kind)
            if channel is not None:
                self.workspace.hooks[rest] = Hook(conversation_id(channel), user, message_ts, ephemeral)
        return f"{self.root_url}{HOOKS_PREFIX}{rest}"

    def record_ephemeral(self, channel: str, user: str, text: str, blocks: list[Any] | None = None) -> str:
        """Show a synchronous ack body (a slash command's answer) to the user who typed it, as
        Slack does: an ephemeral message. Returns its ts. Blocks Slack would refuse are violations
        and are left out."""
        with self._locked():
            try:
                self.checks.blocks(blocks)
                if blocks is not None and not is_block_list(blocks):
                    raise SlackError("invalid_blocks", "blocks: not a list of block objects")
            except SlackError as error:
                self.violations.extend(f"ack: {problem}" for problem in error.problems)
                blocks = None
            return self.workspace.post_ephemeral(conversation_id(channel), user, text, blocks, None)

    def close_view(self, view_id: str) -> None:
        """The user closed the modal."""
        with self._locked():
            self.workspace.close(view_id)

    def after_submission(self, view_id: str, ack: dict[str, Any] | None) -> dict[str, str]:
        """Apply a view_submission's ack body as Slack does: none closes the view, `update` replaces
        it, `push` stacks a new one, `clear` closes all of the user's, `errors` keeps it open and
        returns the errors by block_id. An ack Slack would refuse is a violation; the view stays."""
        with self._locked():
            try:
                return self.workspace.after_submission(view_id, ack or {})
            except SlackError as error:
                self.violations.extend(f"view_submission ack: {problem}" for problem in error.problems)
                return {}

    # -- answering a call (local.transport.Backend) ------------------------------------------

    def answer_call(self, method: str, params: Params | Malformed, token: str | None, received_at: float) -> Outcome:
        with self._locked():
            recorded = params if isinstance(params, dict) else {}
            outcome = self._injected(method, recorded, received_at) or Outcome(
                200, {}, self._process(method, params, token)
            )
            if self._drops.get(method) and outcome.status == 200:
                self._drops[method] -= 1
                outcome = Outcome(DROPPED, {}, outcome.response)
            self._record(Call(method, recorded, token, outcome.status, outcome.response, received_at))
            held = self._holds.get(method)
            release = held.pop(0) if held and outcome.status == 200 else None
        if release is not None:
            release.wait(60)
        return outcome

    def _injected(self, method: str, params: Params, received_at: float) -> Outcome | None:
        """A failure a test queued or asked for, or a 429 past the enforced limits; None to answer."""
        queued = self._failures.get(method)
        if queued:
            return queued.pop(0)
        every = self._every
        if every is not None and (not every.methods or method in every.methods):
            every.seen += 1
            if every.seen % every.n == 0:
                return every.outcome
        enforced = self.enforced
        if enforced is not None and not enforced.admits(method, params, received_at):
            headers = {"Retry-After": str(enforced.retry_after)}
            return Outcome(429, headers, {"ok": False, "error": "ratelimited"})
        return None

    def answer_hook(self, rest: str, path: str, params: Params | Malformed, received_at: float) -> Outcome:
        """A message to a response_url: text or blocks, optionally replace_original or
        delete_original; Slack takes five per URL. One the stand-in did not mint with a channel (a
        test's own) is only recorded."""
        with self._locked():
            self._response_uses[rest] += 1
            problems = self._hook_problems(rest, params)
            self.violations.extend(f"response_url: {p}" for p in problems)
            recorded = params if isinstance(params, dict) else {}
            hook = self.workspace.hooks.get(rest)
            error = None if problems or hook is None else self.workspace.respond(hook, recorded)
            if problems or error:
                outcome = Outcome(404, {}, {"ok": False, **({"error": error} if error else {})})
            else:
                outcome = Outcome(200, {}, {"ok": True})
            call = Call(RESPONSE_URL, {**recorded, "url": path}, None, outcome.status, outcome.response, received_at)
            self._record(call)
            return outcome

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        if self._max_calls is not None and len(self.calls) > 2 * self._max_calls:
            del self.calls[: -self._max_calls]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The lock; waiters wake when it is released, and if what a client shows changed, so do
        the on_change callbacks (outside the lock, so that they may read the state)."""
        self._cond.acquire()
        before = self.workspace.version
        try:
            yield
        finally:
            listeners = list(self._listeners) if self.workspace.version != before else []
            self._cond.notify_all()
            self._cond.release()
            for listener in listeners:
                try:
                    listener()
                except Exception:
                    log.exception("a FakeSlack change callback failed")

    def _process(self, method: str, params: Params | Malformed, token: str | None) -> Answer:
        try:
            return {"ok": True, **self._dispatch(method, params, token)}
        except SlackError as err:
            self.violations.extend(f"{method}: {problem}" for problem in err.problems)
            answer: Answer = {"ok": False, "error": err.error}
            if err.problems:
                answer["response_metadata"] = {"messages": [f"[ERROR] {p}" for p in err.problems]}
            return answer
        except (KeyError, TypeError, ValueError, AttributeError) as error:  # a shape no check above foresaw
            self.violations.append(f"{method}: FakeSlack could not read the call ({error!r})")
            return {"ok": False, "error": "invalid_arguments"}

    def _dispatch(self, method: str, params: Params | Malformed, token: str | None) -> Answer:
        if isinstance(params, Malformed):
            raise SlackError(params.error, params.problem)
        handler = self._handlers.get(method)
        if handler is None:
            raise SlackError("unknown_method", f"FakeSlack does not implement {method!r}")
        if not token:
            raise SlackError("not_authed", "no token (expected an 'Authorization: Bearer' header)")
        app_level = method == "apps.connections.open"
        if token.startswith("xapp-") != app_level:
            wanted = "an app-level token (xapp-)" if app_level else "a bot token, not an app-level one"
            raise SlackError("not_allowed_token_type", f"{method} takes {wanted}")
        missing = [name for name in self._required[method] if _absent(params.get(name))]
        if missing:
            raise SlackError("invalid_arguments", *(f"missing required parameter {name!r}" for name in missing))
        wrong = _type_problems(params)
        if wrong:
            raise SlackError("invalid_arguments", *wrong)
        if method in ONE_OF:
            fields, error = ONE_OF[method]
            if all(_absent(params.get(name)) for name in fields):
                raise SlackError(error, f"needs one of {', '.join(fields)}")
        return handler(params)

    def _hook_problems(self, rest: str, params: Params | Malformed) -> list[str]:
        if isinstance(params, Malformed):
            return [params.problem]
        problems = _type_problems(params) + _blocks_problems(params)
        if self._response_uses[rest] > RESPONSE_URL_USES:
            problems.append(f"{HOOKS_PREFIX}{rest}: used more than {RESPONSE_URL_USES} times")
        if _absent(params.get("text")) and _absent(params.get("blocks")) and not flag(params.get("delete_original")):
            problems.append("a response_url message needs text or blocks")
        if problems:
            return problems
        try:
            self.checks.blocks(params.get("blocks"))
        except SlackError as error:
            return error.problems
        return []

    # -- methods -----------------------------------------------------------------------------

    def _auth_test(self, params: Params) -> Answer:
        return {
            "url": "https://handrail-test.slack.com/",
            "team": "Handrail Test",
            "user": "handrail",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _connections_open(self, params: Params) -> Answer:
        if self.socket_url is None:
            raise SlackError("internal_error", "FakeSlack.socket_url is not set: nothing stands in for Socket Mode")
        return {"url": self.socket_url}

    def _post_message(self, params: Params) -> Answer:
        self.checks.blocks(params.get("blocks"))
        metadata = _metadata(params)
        channel = conversation_id(params["channel"])
        text, blocks, thread_ts = params.get("text", ""), params.get("blocks"), params.get("thread_ts")
        message = self.workspace.post(channel, text, blocks, thread_ts, metadata)
        return {"channel": channel, "ts": message["ts"], "message": message}

    def _update_message(self, params: Params) -> Answer:
        self.checks.blocks(params.get("blocks"), allow_empty=True)
        _metadata(params)
        channel, ts = conversation_id(params["channel"]), params["ts"]
        message = self.workspace.update(channel, ts, params)
        answered = {key: value for key, value in message.items() if key not in ("ts", "thread_ts")}
        return {"channel": channel, "ts": ts, "text": message["text"], "message": answered}

    def _permalink(self, params: Params) -> Answer:
        channel, ts = conversation_id(params["channel"]), params["message_ts"]
        if (channel, ts) not in self.messages:
            raise SlackError("message_not_found", f"no message ts={ts} in {channel}")
        return {
            "channel": channel,
            "permalink": f"https://handrail-test.slack.com/archives/{channel}/p{ts.replace('.', '')}",
        }

    def _post_ephemeral(self, params: Params) -> Answer:
        self.checks.blocks(params.get("blocks"))
        channel, user = conversation_id(params["channel"]), params["user"]
        text, blocks, thread_ts = params.get("text", ""), params.get("blocks"), params.get("thread_ts")
        return {"message_ts": self.workspace.post_ephemeral(channel, user, text, blocks, thread_ts)}

    def _views_open(self, params: Params) -> Answer:
        self.checks.view("modal_view", params.get("view"))
        return {"view": self.workspace.open_view(params["trigger_id"], params["view"])}

    def _views_update(self, params: Params) -> Answer:
        self.checks.view("modal_view", params.get("view"))
        return {"view": self.workspace.update_view(params)}

    def _views_publish(self, params: Params) -> Answer:
        self.checks.view("home_view", params.get("view"))
        return {"view": self.workspace.publish(params["user_id"], params["view"], params.get("hash"))}

    def _open_conversation(self, params: Params) -> Answer:
        if params.get("channel"):
            channel = params["channel"]
            self.workspace.saw(channel, None)
        else:
            users = _id_list(params["users"])
            channel = dm_id(users)
            self.workspace.saw(channel, users)
        return {"channel": {"id": channel}}

    def _conversation_history(self, params: Params) -> Answer:
        """Top-level messages, newest first, between `oldest` and `latest` (exclusive); `limit` per
        page (default 100, at most 999) with `has_more` and a cursor for the next page. Metadata is
        in the answer only with include_all_metadata, as Slack does."""
        channel = conversation_id(params["channel"])
        try:
            oldest = float(params.get("oldest") or 0)
            latest = float(params["latest"]) if params.get("latest") else None
            limit = min(max(int(params.get("limit") or 100), 1), 999)
            start = int(params["cursor"].removeprefix("next_ts:")) if params.get("cursor") else 0
        except (TypeError, ValueError, AttributeError) as error:
            raise SlackError("invalid_arguments", f"oldest, latest, limit or cursor cannot be read ({error})") from None
        with_metadata = _truthy(params.get("include_all_metadata"))
        shown = [
            ({k: v for k, v in message.items() if k != "metadata" or with_metadata})
            for message in reversed(self.workspace.history(channel, None))
            if float(message["ts"]) > oldest and (latest is None or float(message["ts"]) < latest)
        ]
        page = shown[start : start + limit]
        more = start + limit < len(shown)
        answer: Answer = {"messages": page, "has_more": more, "pin_count": 0}
        answer["response_metadata"] = {"next_cursor": f"next_ts:{start + limit}" if more else ""}
        return answer

    def _users_info(self, params: Params) -> Answer:
        return {"user": self.workspace.user(params["user"])}

    def _usergroup_users(self, params: Params) -> Answer:
        group = params["usergroup"]
        if group not in self.usergroup_members:
            raise SlackError("no_such_subteam")
        return {"users": list(self.usergroup_members[group])}


def router(fake: FakeSlack) -> APIRouter:
    """The stand-in's routes, for local mode to include under its prefix (then `fake.mounted_at`)."""
    return asgi_router(fake)


def _truthy(value: Any) -> bool:
    """A boolean parameter as Slack reads it: JSON true, or "true" or "1" in a form or query."""
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1"))


def _metadata(params: Params) -> dict[str, Any] | None:
    """A message's `metadata`, checked as Slack checks it: an object with an `event_type` (a
    string) and an `event_payload` (an object)."""
    metadata = params.get("metadata")
    if metadata is None:
        return None
    if (
        not isinstance(metadata, dict)
        or not isinstance(metadata.get("event_type"), str)
        or not metadata["event_type"]
        or not isinstance(metadata.get("event_payload"), dict)
    ):
        raise SlackError("invalid_metadata_format", "metadata: an event_type (text) and an event_payload (object)")
    return metadata


def _absent(value: Any) -> bool:
    return value is None or value == "" or value == []


def _type_problems(params: Params) -> list[str]:
    problems = [
        f"{name}: a string is expected, not {type(params[name]).__name__}"
        for name in TEXT_PARAMS
        if params.get(name) is not None and not isinstance(params[name], str)
    ]
    users = params.get("users")
    if users is not None and not (
        isinstance(users, str) or (isinstance(users, list) and all(isinstance(u, str) for u in users))
    ):
        problems.append("users: a comma-separated string or a list of ids is expected")
    return problems


def _blocks_problems(params: Params) -> list[str]:
    """Blocks that are not even a list of objects (the schema, when checked, says more). The Web API
    methods find these when they give blocks their ids; a response_url's answer needs it first."""
    if params.get("blocks") is None or is_block_list(params["blocks"]):
        return []
    return ["blocks: not a list of block objects"]


def _id_list(value: str | Iterable[str]) -> list[str]:
    return value.split(",") if isinstance(value, str) else list(value)
