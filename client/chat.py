"""`otc chat`: an interactive chat in the terminal (prompt_toolkit, full screen).

Incoming messages appear as they arrive (a background long poll) while the
owner types. Each sent message shows where it stands: waiting for the
owner's confirmation on the device, sent (✓), delivered (✓✓, from the
recipient device's receipt), waiting in the outbox, or declined. Warnings
from the device are shown in red under the message they concern.

Typed lines stay in memory only (no history file): the laptop keeps no
plaintext.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.data_structures import Point
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.key_binding.bindings.completion import generate_completions
from prompt_toolkit.layout import HSplit, Layout, Window
from prompt_toolkit.layout.containers import Float, FloatContainer
from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.layout.processors import BeforeInput
from prompt_toolkit.styles import Style

from client import presence
from client.errors import ClientError, DeviceRefused, FileSaveError, RelayRefused, RelayUnavailable, RemoteError
from client.messenger import Event, Messenger, Outgoing
from client.padwatch import PadWatch
from client.rooms import RoomClient, fetch_renewals, store_notice
from onetimechat.progress import Progress, human_bytes
from onetimechat.text import format_event, plural

POLL_WAIT_S = 25
DEVICE_PING_S = 3.0  # how often the status line checks that the device answers
CONTACTS_REFRESH_S = 60
RENEWALS_EVERY_S = 20  # how often a watched room first fetches the authority's renewed keys, at most
MAX_BACKOFF_S = 10.0
COMMANDS = ("send", "ms", "group", "groups", "gs", "contacts", "who", "share", "log", "rooms", "join", "leave",
            "receipts", "help", "exit")
HELP = """commands:
  <contact>: <message>        send a message (also: send <contact> <message>)
  /file [<contact>] <path>    send a file (to the contact of the last message if none is named); the device
                              asks you to confirm its name, size and fingerprint; it resumes if cut
  ms <a,b,...> <message>      send the same message to several contacts (each confirmed on the device)
  group <name> <a,b,...>      save a group;  gs <group> <message>  send to a saved group
  groups                      the saved groups
  who; share <contact> on|off contacts online now; tell a contact when you are (off by default)
  contacts                    contacts and the pad left each way
  log                         the device's event log
  rooms; join <room> [as <name>]; leave <room>
                              attribute-based rooms (invites added with otc room add; a name the room shows)
  #<room>: <message>          send to a room you joined (confirmed on the device)
  receipts on|off             ask for delivery receipts (each costs 41 bytes of the receiver's pad)
  help, exit                  this text; leave (also Ctrl-D)
marks: … confirm on your device   ✓ sent   ✓✓ delivered   ⧗ waiting to reach the relay   ✗ not sent"""

STYLE = Style.from_dict({
    "time": "#888888",
    "me": "bold ansiblue",
    "them": "bold ansigreen",
    "mark": "ansigreen",
    "pending": "ansiyellow",
    "failed": "bold ansired",
    "warning": "bold ansiwhite bg:ansired",
    "system": "#888888 italic",
    "status": "reverse",
    "status.bad": "bold ansiwhite bg:ansired",
})


class Backoff:
    """Waits that double after each failure, from one second up to MAX_BACKOFF_S, and start over after a success.

    A wait ends early when ``stop`` is set (the chat is closing).
    """

    def __init__(self, stop: threading.Event, first: float = 1.0, ceiling: float = MAX_BACKOFF_S) -> None:
        self.stop, self.first, self.ceiling = stop, first, ceiling
        self.delay = first

    def wait(self) -> None:
        self.stop.wait(self.delay)
        self.delay = min(self.delay * 2, self.ceiling)

    def reset(self) -> None:
        self.delay = self.first


@dataclass(frozen=True)
class Command:
    """One typed line, parsed."""

    name: str  # send | file | group | contacts | log | receipts | help | exit | error | empty | rooms | join | leave
    #            | room
    contacts: tuple[str, ...] = ()
    text: str = ""
    group: str = ""
    room: str = ""


def parse_command(line: str, groups: dict[str, list[str]]) -> Command:
    """Parse a line typed into the chat (pure, so it is tested on its own)."""
    line = line.strip()
    if not line:
        return Command("empty")
    head, _, rest = line.partition(" ")
    rest = rest.strip()
    word = head.lower()
    if word in ("exit", "quit") and not rest:
        return Command("exit")
    if word in ("/file", "file"):
        if not rest:
            return Command("error", text="usage: /file [<contact>] <path>")
        return Command("file", text=rest)
    if word in ("help", "?") and not rest:
        return Command("help")
    if word in ("contacts", "log", "rooms", "groups", "who") and not rest:
        return Command(word)
    if word == "share":
        contact, _, value = rest.partition(" ")
        if not contact or value.strip().lower() not in ("on", "off"):
            return Command("error", text="usage: share <contact> on|off")
        return Command("share", (contact,), value.strip().lower())
    if word == "join":
        room, _, display = rest.partition(" as ")
        if not room or " " in room or (display and " " in display.strip()) or (" as " in rest and not display):
            return Command("error", text="usage: join <room> [as <name>]")
        return Command("join", room=room.lstrip("#"), text=display.strip())
    if word == "leave":
        if not rest or " " in rest:
            return Command("error", text=f"usage: {word} <room>")
        return Command(word, room=rest.lstrip("#"))
    if head.startswith("#") and len(head) > 1:
        room = head[1:].rstrip(":")
        if not room or not rest:
            return Command("error", text="usage: #<room>: <message>")
        return Command("room", text=rest, room=room)
    if word == "receipts":
        if rest.lower() in ("on", "off"):
            return Command("receipts", text=rest.lower())
        return Command("error", text="usage: receipts on|off")
    if word == "send":
        contact, _, text = rest.partition(" ")
        if not contact or not text.strip():
            return Command("error", text="usage: send <contact> <message>")
        return Command("send", (contact,), text.strip())
    if word == "ms":
        names, _, text = rest.partition(" ")
        contacts = _names(names)
        if not contacts or not text.strip():
            return Command("error", text="usage: ms <a,b,...> <message>")
        return Command("send", contacts, text.strip())
    if word == "group":
        name, _, members = rest.partition(" ")
        contacts = _names(members)
        if not name or not contacts or " " in members.strip():
            return Command("error", text="usage: group <name> <a,b,...>")
        return Command("group", contacts, group=name)
    if word == "gs":
        name, _, text = rest.partition(" ")
        if not name or not text.strip():
            return Command("error", text="usage: gs <group> <message>")
        if name not in groups:
            return Command("error", text=f"no group named {name!r}; make one with: group {name} <a,b,...>")
        return Command("send", tuple(groups[name]), text.strip(), group=name)
    if head.endswith(":") and len(head) > 1 and rest:
        return Command("send", (head[:-1],), rest)
    return Command("error", text=f"unknown command {head!r}; type help")


def _names(text: str) -> tuple[str, ...]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        return ()
    return tuple(dict.fromkeys(names))  # each contact once, in the order given


class ChatCompleter(Completer):
    """Commands first, then contact and group names where they fit."""

    def __init__(self, chat: Chat) -> None:
        self.chat = chat

    def get_completions(self, document: Document, complete_event: object):  # type: ignore[override]
        text = document.text_before_cursor
        words = text.split(" ")
        contacts = self.chat.contact_names()
        if len(words) == 1:
            word = words[0]
            for cmd in COMMANDS:
                if cmd.startswith(word.lower()):
                    yield Completion(cmd + " ", start_position=-len(word))
            for name in contacts:
                if name.startswith(word):
                    yield Completion(name + ": ", start_position=-len(word))
            for name in self.chat.room_names:
                if f"#{name}".startswith(word):
                    yield Completion(f"#{name}: ", start_position=-len(word))
            return
        first, current = words[0].lower(), words[-1]
        if len(words) == 2 and first in ("send", "ms", "group") or (len(words) == 3 and first == "group"):
            part = current.rsplit(",", 1)[-1]
            for name in contacts:
                if name.startswith(part):
                    yield Completion(name, start_position=-len(part))
        elif len(words) == 2 and first == "gs":
            for name in self.chat.messenger.store.groups():
                if name.startswith(current):
                    yield Completion(name + " ", start_position=-len(current))
        elif len(words) == 2 and first in ("join", "leave"):
            for name in self.chat.room_names:
                if name.startswith(current):
                    yield Completion(name, start_position=-len(current))
        elif len(words) == 2 and first == "receipts":
            for choice in ("on", "off"):
                if choice.startswith(current):
                    yield Completion(choice, start_position=-len(current))


@dataclass
class Line:
    """One entry of the conversation pane."""

    at: float
    kind: str  # in | out | system | error
    contact: str = ""
    text: str = ""
    out: Outgoing | None = None
    warnings: list[str] = field(default_factory=list)


class Chat:
    def __init__(self, messenger: Messenger) -> None:
        self.messenger = messenger
        self.lines: list[Line] = []
        self.by_segment: dict[tuple[str, int], Outgoing] = {}
        self.lock = threading.RLock()
        self.status = "connecting…"
        self.status_bad = False
        # What the status line says comes from the latest attempt at each (None: not tried yet).
        self.device_ok: bool | None = None
        self.relay_ok: bool | None = None
        self.device_note = ""
        self.stop = threading.Event()
        self.sends: queue.Queue[Command] = queue.Queue()
        self.rooms = RoomClient(messenger.device, messenger.relay)
        self.padwatch = PadWatch()  # what is said about the pad left with each contact (client/padwatch.py)
        self.padwatch_lock = threading.Lock()
        self.room_names: list[str] = []
        self.watching: dict[str, threading.Event] = {}  # room_id -> stop
        #: Rooms forming again on the relay's store (their history read again: see _room_events): "join" until this
        #: device's own contribution is back, "read" for the store's first read (a device not rejoining).
        self._reforming: dict[str, str] = {}
        self._renewals_lock = threading.Lock()
        self._renewals_at = float("-inf")
        self.transfers: dict[str, Progress] = {}  # files on their way, each with its progress (status line)
        self.last_contact = ""  # of the last message written or received: where /file PATH goes
        self.input = Buffer(multiline=False, history=InMemoryHistory(), completer=ChatCompleter(self),
                            complete_while_typing=False, accept_handler=self._accept)
        self.app: Application = self._build()

    # -- the screen -----------------------------------------------------------------

    def _build(self) -> Application:
        keys = KeyBindings()

        @keys.add("c-c")
        @keys.add("c-d")
        def _(event: object) -> None:
            self.app.exit()

        # Tab completes: the common part at once (all of it when one choice fits), then cycles.
        keys.add("tab")(generate_completions)

        messages = Window(FormattedTextControl(self._render, get_cursor_position=self._bottom, focusable=False),
                          wrap_lines=True)
        status = Window(FormattedTextControl(self._render_status), height=1, style="class:status")
        entry = Window(BufferControl(self.input, input_processors=[BeforeInput("> ")]), height=1)
        body = FloatContainer(HSplit([messages, status, entry]),
                              floats=[Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=8))])
        return Application(layout=Layout(body, focused_element=entry), key_bindings=keys, style=STYLE,
                           full_screen=True, mouse_support=False)

    def _bottom(self) -> Point:
        return Point(0, max(self._line_count - 1, 0))

    def _render(self) -> StyleAndTextTuples:
        out: StyleAndTextTuples = []
        with self.lock:
            for line in self.lines:
                out.extend(self._render_line(line))
        self._line_count = sum(fragment[1].count("\n") for fragment in out) + 1
        if out and out[-1][1].endswith("\n"):
            out[-1] = (out[-1][0], out[-1][1][:-1])
            self._line_count -= 1
        return out

    _line_count = 1

    def _render_line(self, line: Line) -> list[tuple[str, str]]:
        stamp = ("class:time", time.strftime("%H:%M ", time.localtime(line.at)))
        parts: list[tuple[str, str]] = [stamp]
        if line.kind == "in":
            parts += [("class:them", f"{line.contact}: "), ("", line.text)]
        elif line.kind == "out" and line.out is not None:
            parts += [("class:me", f"me → {line.contact}: "), ("", line.text + "  ")]
            parts.append(self._mark(line.out))
        elif line.kind == "error":
            parts.append(("class:failed", line.text))
        else:
            parts.append(("class:system", line.text))
        parts.append(("", "\n"))
        warnings = list(line.warnings) + (line.out.warnings if line.out is not None else [])
        for warning in warnings:
            parts += [("", "      "), ("class:warning", f" ⚠ {warning} "), ("", "\n")]
        return parts

    @staticmethod
    def _mark(out: Outgoing) -> tuple[str, str]:
        if out.delivered:
            return ("class:mark", "✓✓")
        return {
            "confirming": ("class:pending", "… confirm on your device"),
            "sent": ("class:mark", "✓"),
            "queued": ("class:pending", "⧗ waiting for the relay"),
            "declined": ("class:failed", "✗ declined on the device (or not confirmed in time)"),
            "failed": ("class:failed", f"✗ not sent: {out.error}"),
        }.get(out.state, ("", out.state))

    def _render_status(self) -> StyleAndTextTuples:
        device = self.messenger.device.creds.device_name or self.messenger.device.url
        receipts = "receipts on" if self._receipts else "receipts off"
        left = f" device {device} · {receipts} · "
        style = "class:status.bad" if self.status_bad else "class:status"
        with self.lock:
            moving = " · ".join(bar.line() for bar in self.transfers.values())
        return [("class:status", left), (style, f" {self.status} "),
                ("class:status", f"  {moving}" if moving else "  (help: commands)")]

    _receipts = True

    def refresh(self) -> None:
        self.app.invalidate()  # safe from any thread; a no-op once the app has stopped

    def add(self, line: Line) -> None:
        with self.lock:
            self.lines.append(line)
            del self.lines[:-2000]
        self.refresh()

    def system(self, text: str, kind: str = "system") -> None:
        for part in text.splitlines() or [""]:
            self.add(Line(time.time(), kind, text=part))

    def set_status(self, text: str, bad: bool = False) -> None:
        self.status, self.status_bad = text, bad

    def health(self, *, device: bool | None = None, relay: bool | None = None, note: str = "") -> None:
        """Record the outcome of an attempt at the device or the relay and show what holds now."""
        with self.lock:
            if device is not None:
                self.device_ok, self.device_note = device, note
            if relay is not None:
                self.relay_ok = relay
            device_ok, relay_ok, device_note = self.device_ok, self.relay_ok, self.device_note
        waiting = self.messenger.store.waiting()
        if device_ok is False:
            self.set_status(device_note or "the device does not answer; retrying", bad=True)
        elif relay_ok is False:
            self.set_status(f"the relay does not answer; retrying ({waiting} waiting in the outbox)"
                            if waiting else "the relay does not answer; retrying", bad=True)
        elif device_ok and relay_ok:
            self.set_status("connected")
        else:
            self.set_status("connecting…")
        self.refresh()

    def pinger(self) -> None:
        """Ask the device every few seconds whether it answers, so the status line is never stale.

        It also renews this laptop's presence for the contacts it shares it with (opt-in).
        """
        announced = 0.0
        while not self.stop.is_set():
            if (self.messenger.contacts and presence.sharing(self.messenger.store)
                    and time.monotonic() - announced > presence.RENEW_EVERY_S):
                try:
                    presence.announce(self.messenger.relay, self.messenger.store, self.messenger.contacts)
                    announced = time.monotonic()
                except (RelayUnavailable, RelayRefused):
                    pass  # the relay's own status shows through the receiver
            try:
                self.messenger.device.ping()
            except DeviceRefused:
                self.health(device=False, note="this laptop is not paired with the device any more")
                return
            except ClientError as exc:
                self.health(device=False, note=f"the device does not answer; retrying ({exc.code})")
            else:
                self.health(device=True)
            self.stop.wait(DEVICE_PING_S)
        self.refresh()

    def contact_names(self) -> list[str]:
        return [str(c["name"]) for c in self.messenger.contacts]

    # -- typed lines ----------------------------------------------------------------

    def _accept(self, buffer: Buffer) -> bool:
        line = buffer.text
        command = parse_command(line, self.messenger.store.groups())
        if command.name == "exit":
            self.app.exit()
        elif command.name == "help":
            self.system(HELP)
        elif command.name == "groups":
            groups = self.messenger.store.groups()
            if not groups:
                self.system("no saved groups; make one with: group <name> <a,b,...>")
            for name, members in groups.items():
                self.system(f"group {name}: {', '.join(members)}")
        elif command.name == "error":
            self.system(command.text, "error")
        elif command.name == "room":
            self.sends.put(command)
        elif command.name == "file":
            threading.Thread(target=self._send_file, args=(command.text,), daemon=True).start()
        elif command.name == "send":
            unknown = [c for c in command.contacts if self.messenger.contacts and c not in self.contact_names()]
            if unknown:
                self.system(f"no contact named {', '.join(unknown)} on the device; type contacts", "error")
            else:
                self.sends.put(command)
        elif command.name in ("contacts", "log", "receipts", "group", "rooms", "join", "leave", "who", "share"):
            threading.Thread(target=self._local, args=(command,), daemon=True).start()
        return False  # clear the line; it stays in the (in-memory) history

    def _local(self, command: Command) -> None:
        try:
            if command.name == "contacts":
                contacts = self.messenger.refresh_contacts()
                if not contacts:
                    self.system("no contacts yet: pair with someone in person (otc pair host/join on the devices)")
                for c in contacts:
                    if c.get("must_pair_again"):
                        self.system(f"{c['name']}: pad retired (made before package format v2):"
                                    " pair with them again in person", "error")
                        continue
                    self.system(self.padwatch.describe(c))
                    if c.get("forgery_alarm"):
                        self.system(f"{c['name']}: FORGERY ALARM: packages on this pad failed authentication;"
                                    " someone is forging messages (see log)", "error")
                groups = self.messenger.store.groups()
                for name, members in groups.items():
                    self.system(f"group {name}: {', '.join(members)}")
            elif command.name == "who":
                here = presence.online(self.messenger.relay, self.messenger.refresh_contacts())
                shared = sorted(presence.sharing(self.messenger.store))
                self.system(f"online now: {', '.join(here) if here else 'none of your contacts'}"
                            f" · you share your presence with {', '.join(shared) if shared else 'nobody'}")
            elif command.name == "share":
                contact = command.contacts[0]
                if contact not in self.contact_names():
                    self.system(f"no contact named {contact} on the device; type contacts", "error")
                    return
                presence.share(self.messenger.store, contact, command.text == "on")
                presence.announce(self.messenger.relay, self.messenger.store, self.messenger.contacts)
                self.system(f"{contact} {'now sees' if command.text == 'on' else 'no longer sees'} when you are "
                            "online")
            elif command.name == "log":
                events = self.messenger.device.events(limit=20)
                for event in events or [{"event": "(empty)"}]:
                    self.system(format_event(event) if event.get("time") else "the device's log is empty")
            elif command.name == "receipts":
                self.messenger.receipts = command.text == "on"
                self._receipts = command.text == "on"
                self.system(f"delivery receipts {command.text}")
                self.refresh()
            elif command.name == "rooms":
                rooms = self.follow_rooms()
                if not rooms:
                    self.system("no rooms on the device: add an invite with otc room add")
                for room in rooms:
                    state = "member" if room["joined"] else "joining" if room["joining"] else "not joined"
                    epoch = ("no epoch yet" if room["epoch"] is None else
                             f"epoch {room['epoch']}: {plural(room['epoch_members'] or 0, 'member')}"
                             f"{'' if room['keyed'] and room['joined'] else ' (no key here)'}")
                    self.system(f"#{room['room']}: {room['policy']} · {state} · {room['members']} on the roster · "
                                f"{epoch}")
            elif command.name == "join":
                room = self.rooms.room(command.room)
                self.rooms.join(command.room, command.text or None)
                shown = command.text or self.messenger.device.creds.device_name or "this device's name"
                self.system(f"#{room['room']}: joining as {shown}; members decapsulate "
                            "your contribution and the leader "
                            "sends the new epoch key")
                self.watch(room)
            elif command.name == "leave":
                room = self.rooms.room(command.room)
                self.rooms.leave(command.room)
                stop = self.watching.pop(room["room_id"], None)
                if stop is not None:
                    stop.set()
                self.system(f"#{room['room']}: left; the device deleted its keys for this room")
            elif command.name == "group":
                known = self.contact_names()
                unknown = [c for c in command.contacts if known and c not in known]
                if unknown:
                    self.system(f"no contact named {', '.join(unknown)} on the device; group not saved", "error")
                    return
                self.messenger.store.save_group(command.group, list(command.contacts))
                self.system(f"group {command.group}: {', '.join(command.contacts)} (saved)")
        except ClientError as exc:
            self.system(str(exc), "error")

    # -- background work ------------------------------------------------------------

    def sender(self) -> None:
        """Send typed messages one at a time (the device confirms one at a time anyway)."""
        while not self.stop.is_set():
            try:
                command = self.sends.get(timeout=0.5)
            except queue.Empty:
                continue
            if command.name == "room":
                self._send_room(command)
                continue
            for contact in command.contacts:
                self.last_contact = contact
                out = Outgoing(contact, command.text)
                self.add(Line(out.at, "out", contact, command.text, out=out))
                try:
                    sent = self.messenger.send(contact, command.text)
                except RemoteError as exc:
                    out.state, out.error = ("declined", "") if exc.code == "declined" else ("failed", str(exc))
                except (ClientError, RelayRefused) as exc:
                    out.state, out.error = "failed", str(exc)
                else:
                    out.state, out.pad_id, out.offset, out.warnings = sent.state, sent.pad_id, sent.offset, \
                        sent.warnings
                    with self.lock:
                        self.by_segment[(sent.pad_id, sent.offset)] = out
                    self.health(relay=sent.state != "queued")
                    self.padwatch.note(contact, "send", len(command.text.encode()))
                    if sent.asked:
                        self.system(f"the pad to send to {contact} is running low: your device asked {contact}'s "
                                    "device for more")
                    self._watch_pad()
                self.refresh()

    def _send_file(self, text: str) -> None:
        """`/file [<contact>] <path>`: the file through the device and the relay, its progress on the status
        line (rate and time left)."""
        contacts = self.contact_names()
        head, _, rest = text.partition(" ")
        if head.rstrip(":") in contacts and rest.strip():
            contact, path = head.rstrip(":"), rest.strip()
        else:
            contact = self.last_contact or (contacts[0] if len(contacts) == 1 else "")
            path = text
            if not contact:
                self.system("to whom? /file <contact> <path> (or write to them first)", "error")
                return
        where = Path(path).expanduser()
        key = f"send:{where}:{contact}"
        self.system(f"sending {where.name} to {contact}: confirm its name, size and fingerprint on your device…")

        def moved(done: int, total: int) -> None:
            with self.lock:
                bar = self.transfers.get(key)
                if bar is None:
                    bar = self.transfers[key] = _bar(total, f"↑ {where.name[:30]}")
                bar.done = done
            self.refresh()

        try:
            sent = self.messenger.send_file(contact, where, progress=moved)
        except RemoteError as exc:
            self.system("the file was declined on the device; nothing was sent" if exc.code == "declined"
                        else f"{where.name} not sent: {exc}", "error")
        except ClientError as exc:
            self.system(str(exc), "error")
        else:
            text = f"📎 {sent.name} ({human_bytes(sent.size)})"
            self.add(Line(time.time(), "out", contact, text, out=Outgoing(contact, text, state="sent")))
        finally:
            with self.lock:
                self.transfers.pop(key, None)
            self.refresh()

    def _send_room(self, command: Command) -> None:
        out = Outgoing(f"#{command.room}", command.text)
        self.add(Line(out.at, "out", out.contact, command.text, out=out))
        try:
            # What the send fetches first (messages not read yet among them: the device's cursor is past them) is
            # shown as it comes, whether or not the owner then declines.
            self.rooms.send(command.room, command.text, on_events=lambda events: self._room_events(command.room,
                                                                                                 events))
        except RemoteError as exc:
            out.state, out.error = ("declined", "") if exc.code == "declined" else ("failed", str(exc))
        except ClientError as exc:
            out.state, out.error = "failed", str(exc)
        else:
            out.state = "sent"
        self.refresh()

    # -- rooms ----------------------------------------------------------------------

    def refresh_rooms(self) -> list[dict]:
        rooms = self.rooms.rooms()
        self.room_names = [str(r["room"]) for r in rooms]
        return rooms

    def follow_rooms(self) -> list[dict]:
        """Watch every room the device is in or joining, those added or joined since the chat opened too (from
        another terminal): unwatched, a room's messages were not shown and, on its leader, no key was sent until
        the chat restarted (an outside review). The device's rooms."""
        rooms = self.refresh_rooms()
        for room in rooms:
            if room["joined"] or room["joining"]:
                self.watch(room)
        return rooms

    def watch(self, room: dict) -> None:
        """Follow a room's traffic through the device, as it arrives (one long poll per room)."""
        if room["room_id"] in self.watching:
            return
        stop = threading.Event()
        self.watching[room["room_id"]] = stop
        threading.Thread(target=self._watch, args=(room["room_id"], str(room["room"]), stop),
                         name="otc-chat-room", daemon=True).start()

    def _watch(self, room_id: str, name: str, stop: threading.Event) -> None:
        backoff = Backoff(self.stop)
        while not (self.stop.is_set() or stop.is_set()):
            try:
                self._renewals()
                self.rooms.sync(room_id, wait=POLL_WAIT_S, on_events=lambda events: self._room_events(name, events))
            except DeviceRefused:
                return
            except ClientError:
                backoff.wait()
                continue
            backoff.reset()

    def _renewals(self) -> None:
        """The authority's renewed keys first (as `otc room recv` does), at most every RENEWALS_EVERY_S and one room
        at a time: a renewed device moves its rooms on at their next sync, and one that has its renewal never
        follows a revoked member into a period the authority withdrew (docs/rooms.md "Revocation")."""
        with self._renewals_lock:
            if time.monotonic() - self._renewals_at < RENEWALS_EVERY_S:
                return
            self._renewals_at = time.monotonic()
            for got in fetch_renewals(self.rooms.device, self.rooms.relay):
                if got["outcome"] == "stored":
                    k = got["key"]
                    self.system(f"renewed key stored: {', '.join(k['attributes'])} from authority {k['authority']}, "
                                f"period {k['period']} ({k['starts']} to {k['ends']})")
                elif got["outcome"] == "refused":
                    self.add(Line(time.time(), "error", "renewal", f"a renewal was refused: {got['reason']}"))

    def _room_events(self, name: str, events: list[dict]) -> None:
        """A batch of a room's events, as `otc room recv` shows them (onetimechat/cli/room.py show_events): messages
        this device cannot open, in a row, in one line. After a ``store`` event (the room forms again on the
        relay's store: docs/rooms.md "The relay's store changes (R7)"), the room's history read again as a
        newcomer's is not news: its membership changes (joins, leaves, keys, objections) are not shown until this
        device's own contribution is back (or, not rejoining, for the store's first read: the batch after the
        event). Before (red team R7 L3, L4) the chat showed them all again, and one line per old message."""
        reforming: dict[str, str] = self.__dict__.setdefault("_reforming", {})
        state = reforming.get(name)
        unreadable = 0
        read = False

        def flush() -> None:
            nonlocal unreadable
            if unreadable > 1:
                self.system(f"#{name}: {unreadable} messages this device cannot read (sent under keys it does not "
                            "hold: before it joined, while it was away, or before its key came)")
            elif unreadable:
                self._room_event(name, {"kind": "message", "outcome": "unreadable"})
            unreadable = 0

        for event in events:
            kind, outcome, own = event.get("kind"), event.get("outcome"), bool(event.get("own"))
            read = kind != "store"  # an item of the store read after the event (the events before it are not)
            if kind == "message" and outcome == "unreadable":
                unreadable += 1
                continue
            flush()
            if kind == "store":
                state = "join" if event.get("rejoin") else "read"
            elif kind == "contribution" and own and outcome == "accepted":
                state = None
            elif state is not None and kind in ("contribution", "leave", "distribution", "objection") \
                    and outcome in ("accepted", "skipped"):
                continue
            self._room_event(name, event)
        flush()
        if state == "read" and read:
            state = None
        if state is None:
            reforming.pop(name, None)
        else:
            reforming[name] = state

    def _room_event(self, name: str, event: dict) -> None:
        kind, outcome, own = event.get("kind"), event.get("outcome"), bool(event.get("own"))
        members = event.get("members")
        if kind == "message" and outcome == "accepted" and not own:
            self.add(Line(time.time(), "in", f"#{name} {event.get('sender', '?')}", str(event.get("text", ""))))
        elif kind == "message" and outcome == "unreadable":
            self.system(f"#{name}: a message this device cannot read (sent under a key it does not hold)")
        elif kind == "message" and outcome == "late":
            self.system(f"#{name}: a message from {event.get('sender', 'a member')} under a key period that had "
                        "ended (sent after the room moved on): not shown")
        elif kind == "store":
            self.system(f"#{name}: {store_notice(event)}")
        elif kind == "distribution" and outcome == "mismatch":
            self.add(Line(time.time(), "error", name, f"#{name}: a key distribution was refused",
                          warnings=[f"alarm: {event.get('sender', 'a member')} sealed this device another key than "
                                    "the one it committed to; the device objected and the room re-keys"]))
        elif kind == "objection" and outcome == "accepted":
            self.system(f"#{name}: {event.get('sender', 'a member')} objected to a key distribution: the room "
                        "re-keys")
        elif kind == "contribution" and outcome == "accepted":
            who = "you joined" if own else f"{event.get('sender', 'a member')} joined"
            self.system(f"#{name}: {who} ({members} on the roster)")
        elif kind == "contribution" and outcome == "copied":
            self.add(Line(time.time(), "error", name, f"#{name}: your contribution was copied",
                          warnings=["another membership posted a copy of this device's contribution before it (only "
                                    "a member can): the device contributes again"]))
        elif kind == "contribution" and outcome == "skipped":
            self.system(f"#{name}: a contribution that does not satisfy the room's policy was skipped")
        elif kind == "distribution" and outcome == "accepted":
            self.system(f"#{name}: epoch {event.get('epoch')}: {plural(members or 0, 'member')} "
                        f"{'holds' if members == 1 else 'share'} a new key")
        elif kind == "leave" and outcome == "accepted":
            self.system(f"#{name}: {event.get('sender', 'a member')} left ({members} on the roster)")
        elif outcome == "refused":
            self.add(Line(time.time(), "error", name, f"#{name}: an item was refused",
                          warnings=["tamper: a forged or altered room item was refused"]))

    def receiver(self) -> None:
        """Long-poll the relay, have the device open what arrives, and keep the outbox moving."""
        backoff = Backoff(self.stop)
        refreshed = 0.0
        while not self.stop.is_set():
            try:
                if not self.messenger.inbound or time.monotonic() - refreshed > CONTACTS_REFRESH_S:
                    self.messenger.refresh_contacts()  # a pad paired meanwhile brings new mailboxes
                    self.follow_rooms()  # and a room added or joined meanwhile (`otc room join` elsewhere)
                    refreshed = time.monotonic()
                self._flush()
                self.health(relay=True)
                result = self.messenger.poll(self._deliver, wait=POLL_WAIT_S)
                self.health(relay=True)
                if result.waiting:
                    self.health(device=False, note=f"{result.waiting} message(s) wait: the device does not answer")
                    backoff.wait()
                    continue
                self._flush()
                backoff.reset()
            except DeviceRefused as exc:
                self.health(device=False, note="this laptop is not paired with the device any more")
                self.system(str(exc), "error")
                return
            except RelayUnavailable:
                self.health(relay=False)
            except FileSaveError as exc:  # a full disk, say: the part waits on the relay, tried again later
                self.system(str(exc), "error")
            except ClientError as exc:
                self.health(device=False, note=f"the device does not answer; retrying ({exc.code})")
            else:
                continue
            backoff.wait()

    def _flush(self) -> None:
        sent, waiting = self.messenger.flush()
        if sent:
            with self.lock:
                for item in sent:
                    out = self.by_segment.get((item.pad_id, item.offset))
                    if out is not None and out.state == "queued":
                        out.state = "sent"
            self.refresh()
        if waiting:
            raise RelayUnavailable()

    def _watch_pad(self) -> None:
        """Say when the pad left with a contact, either way, falls under 10% or 1% (client/padwatch.py)."""
        try:
            contacts = self.messenger.device.contacts()
        except ClientError:
            return  # the device is away: the next message asks again
        with self.padwatch_lock:
            said = self.padwatch.observe(contacts)
        for text in said:
            self.add(Line(time.time(), "error", text=f"⚠ {text}"))

    def _control(self, event: Event) -> None:
        """A request for pad, or a grant, that the device opened: what it did, in words."""
        control, who = event.control or {}, event.contact
        outcome = control.get("outcome")
        if outcome == "request":
            gives = (event.reply or {}).get("gives")
            self.system(f"{who}'s device asked for more pad to send to you; "
                        + ("your device gave none (its policy: otc device grants)" if event.reply is None
                           else f"your device gave {gives} bytes of its unused pad" if gives
                           else "your device sent again what it gave before (not in use by it yet)"))
        elif outcome == "applied":
            moved = [w.split(": ", 1)[1] for w in event.warnings if w.startswith("split-moved:")]
            self.system(f"the split moved: {moved[0] if moved else who + ' gave more pad'}")
        elif outcome == "repeated":
            pass  # a copy of the grant taken last: nothing changed, nothing to say
        else:
            self.add(Line(event.at, "error", who, f"a pad grant from {who} was not applied",
                          warnings=event.warnings))
        self._watch_pad()

    def _deliver(self, event: Event) -> None:
        if event.kind in ("text", "file"):
            self.last_contact = event.contact
        if event.kind == "file" and event.file is not None:
            f = event.file
            with self.lock:
                bar = self.transfers.get(f.file_id)
                if bar is None and not f.saved:
                    bar = self.transfers[f.file_id] = _bar(f.size, f"↓ {f.name[:30]}")
                    self.add(Line(event.at, "system", event.contact,
                                  f"{event.contact} is sending you {f.name} ({human_bytes(f.size)})"))
                if bar is not None:
                    bar.done = f.done
                if f.saved:
                    self.transfers.pop(f.file_id, None)
            if f.saved:
                self.add(Line(event.at, "in", event.contact, f"📎 {f.name} ({human_bytes(f.size)}) saved as {f.saved}",
                              warnings=event.warnings))
            self.refresh()
        elif event.kind == "text":
            self.add(Line(event.at, "in", event.contact, event.text or "", warnings=event.warnings))
            self.padwatch.note(event.contact, "receive", len((event.text or "").encode()))
            self._watch_pad()
        elif event.kind == "control":
            self._control(event)
        elif event.kind == "notice":  # the relay's news (a new store), not a message
            for warning in event.warnings:
                self.system(warning, "error")
        elif event.kind == "receipt":
            target = event.receipt_for or {}
            with self.lock:
                out = self.by_segment.get((str(target.get("pad_id")), int(target.get("offset", -1))))
            if out is not None:
                out.delivered = True
                self.refresh()
            elif event.sent is not None:
                self.system(f"{event.contact} received your message of "
                            f"{time.strftime('%H:%M', time.localtime(event.sent.created))} ✓✓")
            if event.warnings:
                self.add(Line(event.at, "system", event.contact, f"a receipt from {event.contact}",
                              warnings=event.warnings))
        else:
            label = {"refused": f"a message for you from {event.contact} was refused",
                     "reopened": f"a message from {event.contact} cannot be shown",
                     "other": f"{event.contact} sent something this client cannot show"}.get(event.kind, "")
            self.add(Line(event.at, "error", event.contact, label, warnings=event.warnings))

    def run(self) -> int:
        self._receipts = self.messenger.receipts
        self.system(f"One Time Chat with device at {self.messenger.device.url} via relay "
                    f"{self.messenger.relay.url}. Type help for commands.")
        try:
            contacts = self.messenger.refresh_contacts()
            names = ", ".join(self.contact_names()) or "none yet"
            self.system(f"contacts: {names}")
            for text in self.padwatch.observe(contacts):  # a pad already low when the chat opens
                self.add(Line(time.time(), "error", text=f"⚠ {text}"))
        except DeviceRefused:
            raise
        except ClientError as exc:
            self.set_status(f"the device does not answer ({exc.code})", bad=True)
        try:
            self.follow_rooms()
        except DeviceRefused:
            raise
        except ClientError:
            pass  # the device is away; rooms are followed once `rooms` or `join` reaches it
        threads = [threading.Thread(target=self.receiver, name="otc-chat-receive", daemon=True),
                   threading.Thread(target=self.sender, name="otc-chat-send", daemon=True),
                   threading.Thread(target=self.pinger, name="otc-chat-ping", daemon=True)]
        for t in threads:
            t.start()
        try:
            self.app.run()
        finally:
            self.stop.set()
        return 0


def _bar(total: int, label: str) -> Progress:
    """A progress figure for the status line (drawn there, never on a stream of its own)."""
    return Progress(total, label, stream=io.StringIO(), interactive=False)


def run_chat(messenger: Messenger) -> int:
    return Chat(messenger).run()
