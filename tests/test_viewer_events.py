"""The viewer's hands-free input layer (no Qt needed)."""

from __future__ import annotations

import json

import pytest

from arspine.errors import InputError
from arspine.viewer.events import (
    Command,
    CommandBus,
    FootPedal,
    GestureVoiceStream,
    KeyboardSource,
    StreamEvent,
)


@pytest.fixture()
def bus():
    b = CommandBus(debounce_s=0.25)
    got = []
    b.subscribe(got.append)
    b.got = got
    return b


def test_three_sources_feed_one_bus_in_order(bus):
    kb, pedal, stream = KeyboardSource(bus), FootPedal(bus), GestureVoiceStream(bus)
    kb.press("N", 0.0)
    pedal.tap("right", 1.0)
    stream.feed(StreamEvent(2.0, "voice", "Next Level"))
    stream.feed(StreamEvent(3.0, "gesture", "swipe_left"))
    kb.press("o", 4.0)
    assert [(e.command, e.source) for e in bus.got] == [
        (Command.NEXT_LEVEL, "keyboard"), (Command.NEXT_LEVEL, "pedal"),
        (Command.NEXT_LEVEL, "voice"), (Command.PREVIOUS_LEVEL, "gesture"),
        (Command.TOGGLE_OVERLAY, "keyboard")]
    assert bus.history == bus.got


def test_unmapped_key_is_ignored(bus):
    assert KeyboardSource(bus).press("F12", 0.0) is None
    assert bus.got == []


def test_debounce_drops_pedal_bounce_but_not_other_sources(bus):
    pedal, kb = FootPedal(bus), KeyboardSource(bus)
    pedal.tap("right", 0.0, hold_s=0.05)
    pedal.tap("right", 0.1, hold_s=0.05)  # bounce, 0.1 s later
    kb.press("N", 0.1)  # another source is not debounced against the pedal
    pedal.tap("right", 1.0, hold_s=0.05)
    assert [e.source for e in bus.got] == ["pedal", "keyboard", "pedal"]


def test_pedal_long_press_reregisters_short_press_confirms(bus):
    pedal = FootPedal(bus, long_press_s=0.8)
    pedal.press("middle", 0.0)
    assert pedal.release("middle", 0.3).command == Command.CONFIRM
    pedal.press("middle", 5.0)
    assert pedal.release("middle", 6.0).command == Command.RE_REGISTER
    assert pedal.release("middle", 7.0) is None  # release without press
    with pytest.raises(InputError, match="pedal button"):
        pedal.press("top", 0.0)


def test_low_confidence_and_unknown_phrases_are_rejected(bus):
    s = GestureVoiceStream(bus, min_confidence=0.6)
    assert s.feed(StreamEvent(0.0, "voice", "re-register", 0.4)) is None
    assert s.feed(StreamEvent(1.0, "voice", "open the pod bay doors", 0.99)) is None
    assert s.feed(StreamEvent(2.0, "voice", "register again", 0.9)).command == \
        Command.RE_REGISTER
    assert s.rejected == 2
    with pytest.raises(InputError, match="kind"):
        s.feed(StreamEvent(0.0, "telepathy", "next"))


def test_recorded_stream_file_round_trip(bus, tmp_path):
    rows = [{"timestamp_s": 0.5, "kind": "gesture", "token": "pinch"},
            {"timestamp_s": 0.1, "kind": "voice", "token": "next", "confidence": 0.95}]
    p = tmp_path / "stream.json"
    p.write_text(json.dumps(rows))
    events = GestureVoiceStream.load(p)
    delivered = GestureVoiceStream(bus).play(events)
    assert [e.command for e in delivered] == [Command.NEXT_LEVEL, Command.CONFIRM]
    bad = tmp_path / "bad.json"
    bad.write_text('[{"kind": "voice"}]')
    with pytest.raises(InputError, match="timestamp_s"):
        GestureVoiceStream.load(bad)
    with pytest.raises(InputError, match="not found"):
        GestureVoiceStream.load(tmp_path / "missing.json")


def test_unknown_command_names_the_argument(bus):
    with pytest.raises(InputError, match="command must be one of"):
        bus.emit("self_destruct", "keyboard", 0.0)


def test_disabled_source_is_filtered(bus):
    bus.enabled_sources = {"pedal"}
    assert KeyboardSource(bus).press("N", 0.0) is None
    assert FootPedal(bus).tap("left", 0.0).command == Command.PREVIOUS_LEVEL
