"""The parts of Slack's payloads that listeners read, as typed models.

Slack signs what it sends, but a listener still checks each field it uses: a payload without one,
or with one of another type, fails validation here and its listener answers that the form or the
message is out of date, instead of failing on a missing key. Extra fields are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field, StringConstraints, ValidationError

from bot.config import USER_ID

Model = TypeVar("Model", bound=BaseModel)
UserId = Annotated[str, StringConstraints(pattern=USER_ID)]


class User(BaseModel):
    id: UserId


class Option(BaseModel):
    value: str = Field(max_length=150)


class InputState(BaseModel):
    """One input element's state in a submitted view: `value` for text and number inputs,
    `selected_option` for a select menu."""

    value: str | None = None
    selected_option: Option | None = None


class ViewState(BaseModel):
    values: dict[str, dict[str, InputState]] = {}


class View(BaseModel):
    id: str = Field(min_length=1, max_length=255)
    private_metadata: str = Field(max_length=3000)
    state: ViewState = ViewState()

    def text(self, block_id: str, action_id: str) -> str | None:
        """A text input's value; None when the view has no such input."""
        state = self.state.values.get(block_id, {}).get(action_id)
        return None if state is None else state.value or ""

    def entered(self, block_id: str, action_id: str) -> str | None:
        """What was entered in a text or number input (empty when left blank), or the value of the
        option chosen in a select menu; None when the view has no such input."""
        state = self.state.values.get(block_id, {}).get(action_id)
        if state is None:
            return None
        if state.selected_option is not None:
            return state.selected_option.value
        return state.value or ""


class ViewSubmission(BaseModel):
    user: User
    view: View


class Action(BaseModel):
    value: str = Field(max_length=2000)


class Click(BaseModel):
    """A click on a button: who clicked, the button's value, and the trigger a modal needs."""

    user: User
    actions: list[Action] = Field(min_length=1)
    trigger_id: str = Field(default="", max_length=255)

    @property
    def value(self) -> str:
        return self.actions[0].value


class Channel(BaseModel):
    id: str = Field(min_length=1, max_length=64)


class ClickedIn(BaseModel):
    """The conversation (a channel or a DM) of the message clicked; read apart from Click, so that a
    click without it is still answered."""

    channel: Channel


class Command(BaseModel):
    """A slash command's form fields."""

    user_id: UserId
    text: str = Field(default="", max_length=4000)
    trigger_id: str = ""


def parse(model: type[Model], payload: Any) -> Model | None:
    """The payload as `model`, or None when a field the listener uses is missing or malformed."""
    try:
        return model.model_validate(payload)
    except ValidationError:
        return None
