"""Hands-free input: one command layer fed by keyboard, foot pedal and gesture/voice.

A surgeon in a sterile field cannot touch a mouse; the viewer therefore never acts on a key
or a click directly. Every source turns its raw input into a :class:`Command` on one
:class:`CommandBus`, and the viewer subscribes to the bus. The sources here are plain Python
(no Qt) so that the mapping can be tested and scripted without a display.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from arspine.errors import InputError

__all__ = ["Command", "InputEvent", "CommandBus", "KeyboardSource", "FootPedal",
           "GestureVoiceStream", "StreamEvent", "DEFAULT_KEYS", "DEFAULT_PHRASES",
           "DEFAULT_GESTURES"]


class Command(str, Enum):
    """What the surgeon asks the viewer to do."""

    NEXT_LEVEL = "next_level"
    PREVIOUS_LEVEL = "previous_level"
    TOGGLE_OVERLAY = "toggle_overlay"
    TOGGLE_SCAN = "toggle_scan"
    CONFIRM = "confirm"
    CANCEL = "cancel"
    RE_REGISTER = "re_register"
    TOGGLE_PREDICTION = "toggle_prediction"
    TOGGLE_LATENCY = "toggle_latency"
    PLAY_TRAJECTORY = "play_trajectory"
    HEAD_LEFT = "head_left"
    HEAD_RIGHT = "head_right"
    HEAD_UP = "head_up"
    HEAD_DOWN = "head_down"
    HEAD_FORWARD = "head_forward"
    HEAD_BACK = "head_back"
    RESET_VIEW = "reset_view"


@dataclass(frozen=True)
class InputEvent:
    """One command as delivered to subscribers: what, from which source, when (s), raw input."""

    command: Command
    source: str
    timestamp_s: float
    raw: str = ""


class CommandBus:
    """Delivers commands from every source to every subscriber, in order.

    Parameters
    ----------
    debounce_s : float
        The same command from the same source within this many seconds is dropped (a foot
        pedal bounces; a voice recogniser repeats itself).
    """

    def __init__(self, debounce_s: float = 0.25):
        self.debounce_s = float(debounce_s)
        self.history: list[InputEvent] = []
        self._subscribers: list[Callable[[InputEvent], None]] = []
        self._last: dict[tuple[str, Command], float] = {}
        self.enabled_sources: set[str] | None = None  # None: all

    def subscribe(self, handler: Callable[[InputEvent], None]) -> None:
        self._subscribers.append(handler)

    def unsubscribe(self, handler: Callable[[InputEvent], None]) -> None:
        self._subscribers.remove(handler)

    def emit(self, command: Command | str, source: str, timestamp_s: float,
             raw: str = "") -> InputEvent | None:
        """Send a command; returns the delivered event, or None when filtered out."""
        try:
            command = Command(command)
        except ValueError:
            raise InputError(f"command must be one of {[c.value for c in Command]}, "
                             f"got {command!r}") from None
        if self.enabled_sources is not None and source not in self.enabled_sources:
            return None
        key = (source, command)
        last = self._last.get(key)
        if last is not None and 0.0 <= timestamp_s - last < self.debounce_s:
            return None
        self._last[key] = timestamp_s
        ev = InputEvent(command, source, float(timestamp_s), raw)
        self.history.append(ev)
        for h in list(self._subscribers):
            h(ev)
        return ev


#: key name (Qt's ``QKeySequence(key).toString()`` spelling) -> command
DEFAULT_KEYS: dict[str, Command] = {
    "N": Command.NEXT_LEVEL, "PgDown": Command.NEXT_LEVEL,
    "P": Command.PREVIOUS_LEVEL, "PgUp": Command.PREVIOUS_LEVEL,
    "O": Command.TOGGLE_OVERLAY, "S": Command.TOGGLE_SCAN,
    "Return": Command.CONFIRM, "Enter": Command.CONFIRM, "Esc": Command.CANCEL,
    "R": Command.RE_REGISTER, "K": Command.TOGGLE_PREDICTION, "L": Command.TOGGLE_LATENCY,
    "T": Command.PLAY_TRAJECTORY, "Home": Command.RESET_VIEW,
    "Left": Command.HEAD_LEFT, "Right": Command.HEAD_RIGHT,
    "Up": Command.HEAD_UP, "Down": Command.HEAD_DOWN,
    "W": Command.HEAD_FORWARD, "X": Command.HEAD_BACK,
}


class KeyboardSource:
    """Maps key names to commands (source ``"keyboard"``)."""

    name = "keyboard"

    def __init__(self, bus: CommandBus, keymap: dict[str, Command] | None = None):
        self.bus = bus
        self.keymap = dict(DEFAULT_KEYS if keymap is None else keymap)

    def press(self, key: str, timestamp_s: float) -> InputEvent | None:
        """Handle one key; returns the event, or None for an unmapped key."""
        cmd = self.keymap.get(key) or self.keymap.get(key.upper())
        if cmd is None:
            return None
        return self.bus.emit(cmd, self.name, timestamp_s, raw=key)


class FootPedal:
    """A three-button foot pedal (source ``"pedal"``).

    Left = previous level, right = next level, middle = confirm; holding the middle pedal
    for ``long_press_s`` or longer asks for re-registration instead (a deliberate act, so it
    cannot be triggered by a tap).
    """

    name = "pedal"
    BUTTONS = ("left", "middle", "right")

    def __init__(self, bus: CommandBus, long_press_s: float = 0.8):
        self.bus = bus
        self.long_press_s = float(long_press_s)
        self._down: dict[str, float] = {}

    def _check(self, button: str) -> str:
        if button not in self.BUTTONS:
            raise InputError(f"pedal button must be one of {self.BUTTONS}, got {button!r}")
        return button

    def press(self, button: str, timestamp_s: float) -> None:
        self._down[self._check(button)] = float(timestamp_s)

    def release(self, button: str, timestamp_s: float) -> InputEvent | None:
        button = self._check(button)
        t0 = self._down.pop(button, None)
        if t0 is None:
            return None  # release without press: ignore, as real pedals glitch
        held = float(timestamp_s) - t0
        if button == "left":
            cmd = Command.PREVIOUS_LEVEL
        elif button == "right":
            cmd = Command.NEXT_LEVEL
        else:
            cmd = Command.RE_REGISTER if held >= self.long_press_s else Command.CONFIRM
        return self.bus.emit(cmd, self.name, timestamp_s, raw=f"{button}:{held:.2f}s")

    def tap(self, button: str, timestamp_s: float, hold_s: float = 0.1) -> InputEvent | None:
        self.press(button, timestamp_s)
        return self.release(button, timestamp_s + hold_s)


#: spoken phrase (lower case, normalised) -> command
DEFAULT_PHRASES: dict[str, Command] = {
    "next": Command.NEXT_LEVEL, "next level": Command.NEXT_LEVEL,
    "previous": Command.PREVIOUS_LEVEL, "previous level": Command.PREVIOUS_LEVEL,
    "back": Command.PREVIOUS_LEVEL,
    "overlay": Command.TOGGLE_OVERLAY, "toggle overlay": Command.TOGGLE_OVERLAY,
    "overlay on": Command.TOGGLE_OVERLAY, "overlay off": Command.TOGGLE_OVERLAY,
    "show scan": Command.TOGGLE_SCAN, "hide scan": Command.TOGGLE_SCAN,
    "confirm": Command.CONFIRM, "accept": Command.CONFIRM, "cancel": Command.CANCEL,
    "register": Command.RE_REGISTER, "register again": Command.RE_REGISTER,
    "re-register": Command.RE_REGISTER, "reregister": Command.RE_REGISTER,
    "prediction": Command.TOGGLE_PREDICTION, "latency": Command.TOGGLE_LATENCY,
    "play": Command.PLAY_TRAJECTORY, "reset view": Command.RESET_VIEW,
}

#: recognised hand gesture -> command
DEFAULT_GESTURES: dict[str, Command] = {
    "swipe_right": Command.NEXT_LEVEL, "swipe_left": Command.PREVIOUS_LEVEL,
    "pinch": Command.CONFIRM, "open_palm": Command.TOGGLE_OVERLAY,
    "fist": Command.CANCEL, "circle": Command.RE_REGISTER,
}


@dataclass(frozen=True)
class StreamEvent:
    """One recognised gesture or utterance: ``kind`` is ``"voice"`` or ``"gesture"``."""

    timestamp_s: float
    kind: str
    token: str
    confidence: float = 1.0


@dataclass
class GestureVoiceStream:
    """A simulated gesture/voice recogniser stream (sources ``"voice"`` and ``"gesture"``).

    Events below ``min_confidence`` are dropped: acting on a misheard word in surgery is
    worse than asking again. Unknown phrases are ignored (and counted).
    """

    bus: CommandBus
    min_confidence: float = 0.6
    phrases: dict[str, Command] = field(default_factory=lambda: dict(DEFAULT_PHRASES))
    gestures: dict[str, Command] = field(default_factory=lambda: dict(DEFAULT_GESTURES))
    rejected: int = 0

    def feed(self, event: StreamEvent) -> InputEvent | None:
        if event.kind not in ("voice", "gesture"):
            raise InputError(f"stream event kind must be 'voice' or 'gesture', "
                             f"got {event.kind!r}")
        if event.confidence < self.min_confidence:
            self.rejected += 1
            return None
        words = event.token.lower().replace("_", " ").split()
        if event.kind == "voice":
            token, table = " ".join(words), self.phrases
        else:
            token, table = "_".join(words), self.gestures
        cmd = table.get(token)
        if cmd is None:
            self.rejected += 1
            return None
        return self.bus.emit(cmd, event.kind, event.timestamp_s, raw=event.token)

    def play(self, events: Iterable[StreamEvent]) -> list[InputEvent]:
        """Feed events in timestamp order; returns the delivered ones."""
        out = []
        for ev in sorted(events, key=lambda e: e.timestamp_s):
            r = self.feed(ev)
            if r is not None:
                out.append(r)
        return out

    @staticmethod
    def load(path: str | Path) -> list[StreamEvent]:
        """Read a recorded stream: JSON list (or JSON lines) of
        ``{"timestamp_s", "kind", "token", "confidence"}``."""
        p = Path(path)
        if not p.is_file():
            raise InputError(f"gesture/voice stream file not found: {p}")
        text = p.read_text()
        try:
            rows = json.loads(text) if text.lstrip().startswith("[") else [
                json.loads(line) for line in text.splitlines() if line.strip()]
            return [StreamEvent(float(r["timestamp_s"]), str(r["kind"]), str(r["token"]),
                                float(r.get("confidence", 1.0))) for r in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"gesture/voice stream {p}: expected a list of "
                             f"{{timestamp_s, kind, token[, confidence]}}: {exc}") from None
