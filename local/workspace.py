"""What a Slack client would show of the stand-in's workspace: messages and thread replies, ephemeral
messages per user, the conversations the bot wrote to, open modals per user, Home tabs.

The Web API methods in local.slack write it and local mode's page reads it. It takes no lock of its
own: FakeSlack holds its lock around every use. Each change bumps `version`, which is how FakeSlack
knows to call its on_change callbacks.
"""

from __future__ import annotations

import copy
import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from local.checks import Checks, SlackError

TEAM_ID = "T0HANDRAIL"
BOT_USER_ID = "U0HANDRAIL"
BOT_ID = "B0HANDRAIL"
APP_ID = "A0HANDRAIL"

TRIGGER_LIFETIME_S = 3.0  # a trigger_id opens a modal within 3 seconds, once
KIND_ORDER = {"channel": 0, "dm": 1, "group": 2}

Params = dict[str, Any]
Message = dict[str, Any]


@dataclass(frozen=True)
class Hook:
    """Where a response_url's answers land: the conversation, the user who clicked or typed, and
    the message the click was on (none for a slash command)."""

    channel: str
    user: str | None
    message_ts: str | None
    ephemeral: bool


@dataclass
class _Trigger:
    user: str
    expires_at: float  # on the monotonic clock
    used: bool = False


class Workspace:
    def __init__(self, checks: Checks, monotonic: Callable[[], float], wall_clock: Callable[[], float] | None) -> None:
        self._checks = checks
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._ts_counter = itertools.count(1)
        self._id_counter = itertools.count(1)
        self._last_ts_micros = 0
        self._conversations: dict[str, dict[str, Any]] = {}
        self._triggers: dict[str, _Trigger] = {}
        self._view_stacks: dict[str, list[str]] = defaultdict(list)
        self._closed_views: set[str] = set()
        self.hooks: dict[str, Hook] = {}  # by the response_url's path below /hooks/
        self.version = 0
        self.messages: dict[tuple[str, str], Message] = {}
        self.ephemerals: dict[tuple[str, str], Message] = {}
        self.views: dict[str, dict[str, Any]] = {}  # view_id -> {"user": str | None, "view": as answered}
        self.home_views: dict[str, dict[str, Any]] = {}
        self.channel_names: dict[str, str] = {}
        self.users: dict[str, dict[str, Any]] = {}

    def changed(self) -> None:
        self.version += 1

    # -- messages ----------------------------------------------------------------------------

    def post(
        self,
        channel: str,
        text: str,
        blocks: list[Any] | None,
        thread_ts: str | None,
        metadata: dict[str, Any] | None = None,
    ) -> Message:
        ts = self.next_ts()
        message = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "ts": ts,
            "text": text,
            **({"blocks": self.with_block_ids(blocks)} if blocks is not None else {}),
            **({"thread_ts": thread_ts} if thread_ts is not None else {}),
            **({"metadata": copy.deepcopy(metadata)} if metadata else {}),
        }
        self.messages[(channel, ts)] = message
        self.saw(channel, None)
        self.changed()
        return message

    def update(self, channel: str, ts: str, params: Params) -> Message:
        if (channel, ts) not in self.messages:
            raise SlackError("message_not_found", f"no message ts={ts} in {channel} was posted by chat.postMessage")
        # Fields left out keep their value; blocks=[] removes the blocks.
        message = {**self.messages[(channel, ts)], **({"text": params["text"]} if "text" in params else {})}
        if "blocks" in params:
            message["blocks"] = self.with_block_ids(params["blocks"])
        if isinstance(params.get("metadata"), dict):
            message["metadata"] = copy.deepcopy(params["metadata"])
        if not message.get("blocks"):
            message.pop("blocks", None)
        message["edited"] = {"user": BOT_USER_ID, "ts": self.next_ts()}  # a client shows "(edited)"
        self.messages[(channel, ts)] = message
        self.changed()
        return message

    def post_ephemeral(
        self, channel: str, user: str, text: str, blocks: list[Any] | None, thread_ts: str | None
    ) -> str:
        ts = self.next_ts()
        self.ephemerals[(channel, ts)] = {
            "type": "message",
            "user": user,  # who sees it: Slack shows it to that user only
            "bot_id": BOT_ID,
            "channel": channel,
            "ts": ts,
            "text": text,
            **({"blocks": self.with_block_ids(blocks)} if blocks else {}),
            **({"thread_ts": thread_ts} if thread_ts is not None else {}),
        }
        self.saw(channel, None)
        self.changed()
        return ts

    def respond(self, hook: Hook, params: Params) -> str | None:
        """A message posted to a response_url, by Slack's rules: delete_original deletes the
        message clicked, replace_original replaces it (an ephemeral one stays ephemeral); otherwise
        `in_channel` posts a message as the bot, and the default is an ephemeral message to the
        user. A slash command's URL has no original, so its answers are always new messages.
        Returns the error when the original is gone."""
        original = (hook.channel, hook.message_ts) if hook.message_ts else None
        store = self.ephemerals if hook.ephemeral else self.messages
        text, blocks, thread_ts = params.get("text", ""), params.get("blocks") or None, params.get("thread_ts")
        if flag(params.get("delete_original")):
            if original is not None and store.pop(original, None) is not None:
                self.changed()
        elif flag(params.get("replace_original")) and original is not None:
            if original not in store:
                return "message_not_found"
            kept = {key: value for key, value in store[original].items() if key != "blocks"}
            store[original] = {**kept, "text": text, **({"blocks": self.with_block_ids(blocks)} if blocks else {})}
            self.changed()
        elif params.get("response_type") == "in_channel":
            self.post(hook.channel, text, blocks, thread_ts)
        elif hook.user is not None:
            self.post_ephemeral(hook.channel, hook.user, text, blocks, thread_ts)
        return None

    def history(self, channel: str, user: str | None) -> list[Message]:
        replies: dict[str, int] = defaultdict(int)
        top: list[Message] = []
        for (ch, _), message in self.messages.items():
            if ch != channel:
                continue
            if "thread_ts" in message:
                replies[message["thread_ts"]] += 1
            else:
                top.append(message)
        shown = [{**message, "reply_count": replies[message["ts"]]} for message in top]
        if user is not None:
            shown += [e for e in self._ephemerals_of(channel, user) if "thread_ts" not in e]
        return copy.deepcopy(sorted(shown, key=lambda message: message["ts"]))

    def thread(self, channel: str, ts: str, user: str | None) -> list[Message]:
        shown = [msg for (ch, _), msg in self.messages.items() if ch == channel and msg.get("thread_ts") == ts]
        if user is not None:
            shown += [e for e in self._ephemerals_of(channel, user) if e.get("thread_ts") == ts]
        return copy.deepcopy(sorted(shown, key=lambda message: message["ts"]))

    def _ephemerals_of(self, channel: str, user: str) -> list[Message]:
        return [
            {**ephemeral, "ephemeral": True}
            for (ch, _), ephemeral in self.ephemerals.items()
            if ch == channel and ephemeral["user"] == user
        ]

    # -- conversations and people ------------------------------------------------------------

    def saw(self, conversation: str, users: list[str] | None) -> None:
        """Remember a conversation the bot wrote to or opened: a DM is "D" + its user's id here."""
        if conversation in self._conversations:
            return
        if users is None and conversation.startswith("D"):
            users = [conversation[1:]]
        entry: dict[str, Any] = {"id": conversation, "kind": "channel"}
        if users and len(users) == 1:
            entry.update(kind="dm", user=users[0])
        elif users:
            entry.update(kind="group", users=list(users))
        self._conversations[conversation] = entry
        self.changed()

    def conversations(self) -> list[dict[str, Any]]:
        entries = [{**entry, "name": self._conversation_name(entry)} for entry in self._conversations.values()]
        return copy.deepcopy(sorted(entries, key=lambda e: (KIND_ORDER[e["kind"]], e["name"].lower(), e["id"])))

    def _conversation_name(self, entry: dict[str, Any]) -> str:
        if entry["id"] in self.channel_names:
            return self.channel_names[entry["id"]]
        if entry["kind"] == "dm":
            return str(self.user(entry["user"])["real_name"])
        if entry["kind"] == "group":
            return ", ".join(str(self.user(user)["real_name"]) for user in entry["users"])
        return str(entry["id"])

    def user(self, user_id: str) -> dict[str, Any]:
        return {**_default_user(user_id), **self.users.get(user_id, {})}

    # -- modals and Home tabs ----------------------------------------------------------------

    def mint_trigger(self, user: str) -> str:
        number = next(self._id_counter)
        trigger = f"{398738663015 + number}.47445629121.{number:032x}"  # Slack's shape
        # Kept after they expire (a few dozen bytes a click): a forgotten one would pass for a test's own.
        self._triggers[trigger] = _Trigger(user, self._monotonic() + TRIGGER_LIFETIME_S)
        return trigger

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> dict[str, Any]:
        user = self._exchange(trigger_id)
        issued = self._issued_view(self.next_id("V"), view)
        self.views[issued["id"]] = {"user": user, "view": issued}
        if user is not None:
            self._view_stacks[user].append(issued["id"])
        self.changed()
        return issued

    def update_view(self, params: Params) -> dict[str, Any]:
        """By view_id or external_id, refusing a stale `hash`. A view_id the stand-in never issued
        (a test's own view_submission) is taken as a view of no known user."""
        view_id = params.get("view_id") or self._view_with_external_id(params["external_id"])
        if view_id in self._closed_views:
            raise SlackError("not_found")
        record = self.views.get(view_id, {"user": None, "view": {}})
        if params.get("hash") and record["view"] and params["hash"] != record["view"]["hash"]:
            raise SlackError("hash_conflict")
        issued = self._issued_view(view_id, params["view"])
        self.views[view_id] = {"user": record["user"], "view": issued}
        self.changed()
        return issued

    def publish(self, user: str, view: dict[str, Any], hash_: str | None) -> dict[str, Any]:
        published = self.home_views.get(user)
        if published is not None and hash_ and hash_ != published["hash"]:
            raise SlackError("hash_conflict")
        issued = self._issued_view(published["id"] if published else self.next_id("V"), view)
        self.home_views[user] = issued
        self.changed()
        return issued

    def open_views(self, user: str) -> list[dict[str, Any]]:
        return copy.deepcopy([self.views[view_id]["view"] for view_id in self._view_stacks.get(user, [])])

    def after_submission(self, view_id: str, ack: dict[str, Any]) -> dict[str, str]:
        record = self.views.get(view_id)
        if record is None:
            return {}
        action, user = ack.get("response_action"), record["user"]
        if action is None:
            self.close(view_id)
        elif action == "clear":
            for open_id in list(self._view_stacks.get(user, [])) if user else [view_id]:
                self.close(open_id)
        elif action in ("update", "push"):
            self._checks.view("modal_view", ack.get("view"))
            new_id = view_id if action == "update" else self.next_id("V")
            self.views[new_id] = {"user": user, "view": self._issued_view(new_id, ack["view"])}
            if action == "push" and user is not None:
                self._view_stacks[user].append(new_id)
            self.changed()
        elif action == "errors":
            errors = ack.get("errors")
            if not isinstance(errors, dict) or not all(isinstance(v, str) for v in errors.values()):
                raise SlackError("invalid_arguments", "errors: not an object of block_id to message")
            return {str(key): value for key, value in errors.items()}
        else:
            raise SlackError("invalid_arguments", f"response_action: {action!r} is not one Slack knows")
        return {}

    def close(self, view_id: str) -> None:
        record = self.views.pop(view_id, None)
        self._closed_views.add(view_id)
        if record is None:
            return
        stack = self._view_stacks.get(record["user"]) if record["user"] else None
        if stack and view_id in stack:
            stack.remove(view_id)
        self.changed()

    def _exchange(self, trigger_id: str) -> str | None:
        """The user a minted trigger_id was made for; None for one the stand-in did not mint (the
        tests build their own)."""
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            return None
        if trigger.used:
            raise SlackError("exchanged_trigger_id", f"trigger_id {trigger_id} was used already")
        if self._monotonic() > trigger.expires_at:
            raise SlackError("expired_trigger_id")  # the bot was slow: Slack's answer, not a malformed call
        trigger.used = True
        return trigger.user

    def _view_with_external_id(self, external_id: str) -> str:
        for view_id, record in self.views.items():
            if record["view"].get("external_id") == external_id:
                return view_id
        raise SlackError("not_found")

    def _issued_view(self, view_id: str, view: dict[str, Any]) -> dict[str, Any]:
        """The view as Slack answers it: ids, a new hash, and a block_id on every block."""
        defaults = {"private_metadata": "", "callback_id": "", "external_id": "", "state": {"values": {}}}
        ids = {"id": view_id, "team_id": TEAM_ID, "app_id": APP_ID, "bot_id": BOT_ID, "root_view_id": view_id}
        blocks = self.with_block_ids(view.get("blocks", []))
        return {**defaults, **view, "blocks": blocks, **ids, "hash": f"{self.next_ts()}.fake"}

    # -- ids ---------------------------------------------------------------------------------

    def with_block_ids(self, blocks: Any) -> list[dict[str, Any]]:
        """Slack gives every block without a block_id one of its own."""
        if not is_block_list(blocks):
            raise SlackError("invalid_blocks", "blocks: not a list of block objects")
        return [{"block_id": self.next_id("fk"), **block} for block in blocks]

    def next_ts(self) -> str:
        """Increasing, as Slack's are: from the wall clock in local mode, counted in tests."""
        if self._wall_clock is not None:
            micros = int(self._wall_clock() * 1_000_000)
        else:
            micros = 1_700_000_000_000_000 + next(self._ts_counter) * 100
        micros = self._last_ts_micros = max(micros, self._last_ts_micros + 1)
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._id_counter):010d}"

    def hook_path(self, kind: str) -> str:
        return f"{kind}/{TEAM_ID}/{next(self._id_counter)}/x{next(self._ts_counter):08d}"


def is_block_list(blocks: Any) -> bool:
    return isinstance(blocks, list) and all(isinstance(block, dict) for block in blocks)


def flag(value: Any) -> bool:
    """A boolean field, sent as JSON true or as form text."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def conversation_id(channel: str) -> str:
    """Posting to a user id posts to the DM with that user, whose id Slack answers."""
    return dm_id([channel]) if channel[:1] in ("U", "W") else channel


def dm_id(user_ids: list[str]) -> str:
    """A DM's id is "D" + the user's id here; a group DM's is "G" + all of them."""
    return f"D{user_ids[0]}" if len(user_ids) == 1 else "G" + "".join(user_ids)


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
