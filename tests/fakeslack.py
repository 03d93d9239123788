"""A fake Slack Web API served over HTTP on loopback, for tests.

It answers the methods the bot uses the way Slack does, records every call, and checks each call
against artifacts Slack (and others) published in ../shared/slack: required parameters from the
Web API spec, Block Kit from the JSON Schema, and the limits in limits.json. Every problem found is
appended to `violations` and answered with the error Slack would return.
"""

from __future__ import annotations

import functools
import itertools
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from jsonschema import Draft202012Validator, ValidationError

DEFAULT_SLACK_DIR = Path(__file__).resolve().parents[2] / "shared" / "slack"
API_PREFIX = "/api/"
HOOKS_PREFIX = "/hooks/"  # response_url: where a slash command or a click may answer, up to 5 times
RESPONSE_URL_USES = 5
RESPONSE_URL = "response_url"  # Call.method of a message posted to a response_url

TEAM_ID = "T0HANDRAIL"
BOT_USER_ID = "U0HANDRAIL"
BOT_ID = "B0HANDRAIL"
APP_ID = "A0HANDRAIL"

# Parameters Slack sends as JSON text when they arrive form-encoded.
JSON_FIELDS = ("blocks", "attachments", "view", "metadata")
# Slack's docs need one of these fields although the 2020 spec marks none of them required.
ONE_OF: dict[str, tuple[tuple[str, ...], str]] = {
    "chat.postMessage": (("text", "blocks", "attachments"), "no_text"),
    "chat.update": (("text", "blocks", "attachments"), "no_text"),
    "chat.postEphemeral": (("text", "blocks", "attachments"), "no_text"),
    "conversations.open": (("users", "channel"), "users_list_not_supplied"),
    "users.info": (("user",), "user_not_found"),
    "views.update": (("view_id", "external_id"), "invalid_arguments"),
}

# Methods that take the app-level token (xapp-), and no other; the 2020 spec predates them.
APP_TOKEN_METHODS = ("apps.connections.open",)

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
class _Outcome:
    status: int
    headers: dict[str, str]
    response: Answer


class SlackError(Exception):
    """Ends a call with {"ok": false, "error": error}; each problem is also a violation."""

    def __init__(self, error: str, *problems: str) -> None:
        super().__init__(error, *problems)
        self.error = error
        self.problems = list(problems)


class FakeSlack:
    def __init__(self, slack_dir: Path = DEFAULT_SLACK_DIR, *, check_blocks: bool = True) -> None:
        """check_blocks=False skips the Block Kit schema (about 10 ms a card): for benchmarks that
        measure the bot, not this fake. Tests keep it on."""
        self._check_schemas = check_blocks
        spec = _load_json(slack_dir / "slack_web_openapi_v2_without_examples.json")
        block_kit = _load_json(slack_dir / "slack-block-kit.schema.json")
        limits = _load_json(slack_dir / "limits.json")
        self._blocks_validator = Draft202012Validator(block_kit)
        self._view_validators = {name: _def_validator(block_kit, name) for name in ("modal_view", "home_view")}
        self._max_message_blocks: int = limits["blocks_per_message"]["value"]
        self._handlers: dict[str, Callable[[Params], Answer]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update_message,
            "chat.getPermalink": self._permalink,
            "chat.postEphemeral": self._post_ephemeral,
            "views.open": functools.partial(self._view, "modal_view"),
            "views.update": functools.partial(self._view, "modal_view"),
            "views.publish": functools.partial(self._view, "home_view"),
            "conversations.open": self._open_conversation,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroup_users,
            "apps.connections.open": self._connections_open,
        }
        self._required = {
            method: () if method in APP_TOKEN_METHODS else _required_params(spec, method) for method in self._handlers
        }
        self._cond = threading.Condition()
        self._failures: dict[str, list[_Outcome]] = defaultdict(list)
        self._ts_counter = itertools.count(1)
        self._id_counter = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self.root_url = ""
        self._response_uses: dict[str, int] = defaultdict(int)
        self.calls: list[Call] = []
        self.violations: list[str] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.usergroup_members: dict[str, list[str]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.socket_url = ""  # what apps.connections.open answers: a Socket Mode stand-in's ws:// URL

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        # serve_forever notices shutdown() between selects: a short interval makes stop() quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakeslack", daemon=True
        )
        self._thread.start()
        self.root_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.base_url = self.root_url + API_PREFIX

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

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

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """Replies posted with thread_ts=ts, oldest first (the parent is not included)."""
        channel = _conversation_id(channel)
        with self._cond:
            return [msg for (ch, _), msg in self.messages.items() if ch == channel and msg.get("thread_ts") == ts]

    def response_url(self, kind: str = "commands") -> str:
        """A fresh response_url, as Slack puts in a slash command or a click."""
        return f"{self.root_url}{HOOKS_PREFIX}{kind}/{TEAM_ID}/{next(self._id_counter)}/x{next(self._ts_counter):08d}"

    def responses(self) -> list[Call]:
        """Messages posted to response_urls, oldest first; `params["url"]` says which."""
        return self.calls_to(RESPONSE_URL)

    def rate_limit_next(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        failure = _Outcome(429, {"Retry-After": str(retry_after)}, {"ok": False, "error": "ratelimited"})
        self._queue(method, failure, times)

    def fail_next(self, method: str, error: str, times: int = 1) -> None:
        self._queue(method, _Outcome(200, {}, {"ok": False, "error": error}), times)

    def reset(self) -> None:
        """Forget calls, violations and queued failures; posted messages, users and groups stay."""
        with self._cond:
            self.calls.clear()
            self.violations.clear()
            self._failures.clear()

    def _queue(self, method: str, failure: _Outcome, times: int) -> None:
        with self._cond:
            self._failures[method].extend([failure] * times)

    # -- answering a call --------------------------------------------------------------------

    def _hook(self, path: str, params: Params, received_at: float) -> _Outcome:
        """A message to a response_url: text or blocks, optionally replace_original or
        delete_original; Slack takes five per URL."""
        with self._cond:
            self._response_uses[path] += 1
            problems = []
            if self._response_uses[path] > RESPONSE_URL_USES:
                problems.append(f"{path}: used more than {RESPONSE_URL_USES} times")
            if _absent(params.get("text")) and _absent(params.get("blocks")) and not params.get("delete_original"):
                problems.append("a response_url message needs text or blocks")
            try:
                self._check_blocks(params)
            except SlackError as error:
                problems.extend(error.problems)
            self.violations.extend(f"response_url: {p}" for p in problems)
            outcome = _Outcome(404 if problems else 200, {}, {"ok": not problems})
            self.calls.append(
                Call(RESPONSE_URL, {**params, "url": path}, None, outcome.status, outcome.response, received_at)
            )
            self._cond.notify_all()
            return outcome

    def _answer(self, method: str, params: Params, token: str | None, received_at: float = 0.0) -> _Outcome:
        with self._cond:
            queued = self._failures.get(method)
            outcome = queued.pop(0) if queued else _Outcome(200, {}, self._process(method, params, token))
            self.calls.append(Call(method, params, token, outcome.status, outcome.response, received_at))
            self._cond.notify_all()
            return outcome

    def _process(self, method: str, params: Params, token: str | None) -> Answer:
        try:
            return {"ok": True, **self._dispatch(method, params, token)}
        except SlackError as err:
            self.violations.extend(f"{method}: {problem}" for problem in err.problems)
            answer: Answer = {"ok": False, "error": err.error}
            if err.problems:
                answer["response_metadata"] = {"messages": [f"[ERROR] {p}" for p in err.problems]}
            return answer

    def _dispatch(self, method: str, params: Params, token: str | None) -> Answer:
        handler = self._handlers.get(method)
        if handler is None:
            raise SlackError("unknown_method", f"FakeSlack does not implement {method!r}")
        if not token:
            raise SlackError("not_authed", "no token (expected an 'Authorization: Bearer' header)")
        if token.startswith("xapp-") != (method in APP_TOKEN_METHODS):
            raise SlackError("not_allowed_token_type", f"{method} called with the wrong kind of token")
        missing = [name for name in self._required[method] if _absent(params.get(name))]
        if missing:
            raise SlackError("invalid_arguments", *(f"missing required parameter {name!r}" for name in missing))
        if method in ONE_OF:
            fields, error = ONE_OF[method]
            if all(_absent(params.get(name)) for name in fields):
                raise SlackError(error, f"needs one of {', '.join(fields)}")
        return handler(params)

    # -- checks ------------------------------------------------------------------------------

    def _check_blocks(self, params: Params, *, allow_empty: bool = False) -> None:
        blocks = params.get("blocks")
        if blocks is None or (allow_empty and blocks == []) or not self._check_schemas:
            return
        problems = _schema_problems(self._blocks_validator, blocks, "blocks")
        if isinstance(blocks, list) and len(blocks) > self._max_message_blocks:
            problems.append(
                f"blocks: {len(blocks)} blocks, more than the limit of {self._max_message_blocks} per message"
            )
        if problems:
            raise SlackError("invalid_blocks", *problems)

    def _check_view(self, view_def: str, view: Any) -> None:
        if view is None:
            raise SlackError("invalid_arguments", "missing required parameter 'view'")
        problems = _schema_problems(self._view_validators[view_def], view, "view")
        if problems:
            raise SlackError("invalid_arguments", *problems)

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

    def _post_message(self, params: Params) -> Answer:
        self._check_blocks(params)
        channel, ts = _conversation_id(params["channel"]), self._next_ts()
        message = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "ts": ts,
            "text": params.get("text", ""),
            **({"blocks": self._with_block_ids(params["blocks"])} if "blocks" in params else {}),
            **({"thread_ts": params["thread_ts"]} if "thread_ts" in params else {}),
        }
        self.messages[(channel, ts)] = message
        return {"channel": channel, "ts": ts, "message": message}

    def _update_message(self, params: Params) -> Answer:
        self._check_blocks(params, allow_empty=True)
        channel, ts = _conversation_id(params["channel"]), params["ts"]
        if (channel, ts) not in self.messages:
            raise SlackError("message_not_found", f"no message ts={ts} in {channel} was posted by chat.postMessage")
        # Fields left out keep their value; blocks=[] removes the blocks.
        message = {**self.messages[(channel, ts)], **({"text": params["text"]} if "text" in params else {})}
        if "blocks" in params:
            message["blocks"] = self._with_block_ids(params["blocks"])
        if not message.get("blocks"):
            message.pop("blocks", None)
        self.messages[(channel, ts)] = message
        answered = {key: value for key, value in message.items() if key not in ("ts", "thread_ts")}
        return {"channel": channel, "ts": ts, "text": message["text"], "message": answered}

    def _permalink(self, params: Params) -> Answer:
        channel, ts = _conversation_id(params["channel"]), params["message_ts"]
        if (channel, ts) not in self.messages:
            raise SlackError("message_not_found", f"no message ts={ts} in {channel}")
        return {
            "channel": channel,
            "permalink": f"https://handrail-test.slack.com/archives/{channel}/p{ts.replace('.', '')}",
        }

    def _post_ephemeral(self, params: Params) -> Answer:
        self._check_blocks(params)
        return {"message_ts": self._next_ts()}

    def _view(self, view_def: str, params: Params) -> Answer:
        self._check_view(view_def, params.get("view"))
        view_id = params.get("view_id") or self._next_id("V")
        defaults = {"private_metadata": "", "callback_id": "", "external_id": "", "state": {"values": {}}}
        ids = {"id": view_id, "team_id": TEAM_ID, "app_id": APP_ID, "bot_id": BOT_ID, "root_view_id": view_id}
        return {"view": {**defaults, **params["view"], **ids, "hash": f"{self._next_ts()}.fake"}}

    def _open_conversation(self, params: Params) -> Answer:
        return {"channel": {"id": params.get("channel") or _dm_id(_id_list(params["users"]))}}

    def _connections_open(self, params: Params) -> Answer:
        if not self.socket_url:
            raise SlackError("internal_error", "FakeSlack.socket_url is not set: start a Socket Mode stand-in")
        return {"url": self.socket_url}

    def _users_info(self, params: Params) -> Answer:
        user_id = params["user"]
        return {"user": {**_default_user(user_id), **self.users.get(user_id, {})}}

    def _usergroup_users(self, params: Params) -> Answer:
        group = params["usergroup"]
        if group not in self.usergroup_members:
            raise SlackError("no_such_subteam")
        return {"users": list(self.usergroup_members[group])}

    def _with_block_ids(self, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Slack gives every block without a block_id one of its own."""
        return [{"block_id": self._next_id("fk"), **block} for block in blocks]

    def _next_ts(self) -> str:
        micros = 1_700_000_000_000_000 + next(self._ts_counter) * 100
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._id_counter):010d}"


# -- HTTP ------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    fake: FakeSlack


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as Slack does: clients reuse their connections

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionResetError:  # a client that went away between keep-alive requests
            pass

    def do_GET(self) -> None:
        self._serve(b"")

    def do_POST(self) -> None:
        self._serve(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _serve(self, body: bytes) -> None:
        received_at = time.perf_counter()
        url = urlsplit(self.path)
        if url.path.startswith(HOOKS_PREFIX):
            params = _parse_body(body, self.headers.get("Content-Type", ""))
            self._reply(self.server.fake._hook(url.path, params, received_at))
            return
        if not url.path.startswith(API_PREFIX):
            self.send_error(404)
            return
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        params.update(_parse_body(body, self.headers.get("Content-Type", "")))
        params = _decode_json_fields(params)
        token = _bearer_token(self.headers.get("Authorization")) or params.get("token")
        self._reply(self.server.fake._answer(url.path.removeprefix(API_PREFIX), params, token, received_at))

    def _reply(self, outcome: _Outcome) -> None:
        payload = json.dumps(outcome.response).encode()
        self.send_response(outcome.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in outcome.headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the caller stopped waiting (a server shutting down)
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


def _parse_body(body: bytes, content_type: str) -> Params:
    if not body:
        return {}
    if "json" in content_type.lower():
        return json.loads(body)
    return dict(parse_qsl(body.decode(), keep_blank_values=True))


def _decode_json_fields(params: Params) -> Params:
    """Decode fields such as `blocks` that were sent as JSON text; text that is not JSON stays as is."""
    decoded = dict(params)
    for name in JSON_FIELDS:
        if isinstance(decoded.get(name), str):
            try:
                decoded[name] = json.loads(decoded[name])
            except json.JSONDecodeError:
                pass
    return decoded


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


# -- schema helpers --------------------------------------------------------------------------


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _def_validator(schema: dict[str, Any], name: str) -> Draft202012Validator:
    """A validator for one of the schema's `$defs` (its top level describes only a blocks array)."""
    return Draft202012Validator({"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{name}"})


def _required_params(spec: dict[str, Any], method: str) -> tuple[str, ...]:
    """Required parameters of a method in the spec; `token` is always checked separately."""
    operations = spec["paths"][f"/{method}"].values()
    names = (p["name"] for op in operations for p in op.get("parameters", []) if p.get("required"))
    return tuple(dict.fromkeys(name for name in names if name != "token"))


def _schema_problems(validator: Draft202012Validator, instance: Any, name: str) -> list[str]:
    errors = (leaf for error in validator.iter_errors(instance) for leaf in _explain(error))
    return [f"{name}{error.json_path[1:]}: {_describe(error)}" for error in errors]


def _explain(error: ValidationError) -> list[ValidationError]:
    """Replace a failed oneOf/anyOf by the errors of the one branch whose `type` the instance has.

    Block Kit unions are discriminated by `type`, so "not valid under any of the given schemas"
    usually hides a precise error in the branch the author meant.
    """
    meant = _branches_of_own_type(error)
    if len(meant) != 1:
        return [error]
    return [leaf for sub in meant[0] for leaf in _explain(sub)]


def _branches_of_own_type(error: ValidationError) -> list[list[ValidationError]]:
    """The errors of each oneOf/anyOf branch, leaving out branches made for another `type`."""
    branches: dict[Any, list[ValidationError]] = defaultdict(list)
    for sub in error.context or ():
        branches[sub.relative_schema_path[0]].append(sub)
    return [subs for subs in branches.values() if not any(_is_wrong_type(sub) for sub in subs)]


def _is_wrong_type(error: ValidationError) -> bool:
    return error.validator == "const" and list(error.relative_path) == ["type"]


def _describe(error: ValidationError) -> str:
    if error.context and not _branches_of_own_type(error) and isinstance(error.instance, dict):
        return f"type {error.instance.get('type')!r} is not allowed here"
    if error.context and all(sub.validator == "required" for sub in error.context):
        return "needs one of " + ", ".join(repr(name) for sub in error.context for name in sub.validator_value)
    if error.validator in ("maxLength", "maxItems"):
        unit = "characters" if error.validator == "maxLength" else "items"
        return f"{len(error.instance)} {unit}, more than the limit of {error.validator_value}"
    return error.message if len(error.message) <= 200 else error.message[:200] + "..."


# -- small helpers ---------------------------------------------------------------------------


def _absent(value: Any) -> bool:
    return value is None or value == "" or value == []


def _conversation_id(channel: str) -> str:
    """Posting to a user id posts to the DM with that user, whose id Slack answers."""
    return _dm_id([channel]) if channel[:1] in ("U", "W") else channel


def _dm_id(user_ids: list[str]) -> str:
    """A DM's id is "D" + the user's id here; a group DM's is "G" + all of them."""
    return f"D{user_ids[0]}" if len(user_ids) == 1 else "G" + "".join(user_ids)


def _id_list(value: str | Iterable[str]) -> list[str]:
    return value.split(",") if isinstance(value, str) else list(value)


def _default_user(user_id: str) -> dict[str, Any]:
    name = user_id.lower()
    return {
        "id": user_id,
        "team_id": TEAM_ID,
        "name": name,
        "real_name": f"User {user_id}",
        "deleted": False,
        "is_bot": False,
        "tz": "Etc/UTC",
        "tz_offset": 0,
        "profile": {"real_name": f"User {user_id}", "display_name": name, "email": f"{name}@example.com"},
    }
