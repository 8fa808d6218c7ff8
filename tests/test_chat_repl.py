"""`streamlite chat` driven through a pseudo-terminal (the pty module), as a person types: each
line a turn, multi-line input, /commands, Ctrl-C stopping a reply, Ctrl-D leaving, -c FILE
resumed. The server is a recording one on 127.0.0.1 (tests/wire.py); every wait is bounded."""

import json
import os
import pathlib
import re
import select
import signal
import subprocess
import sys
import time

import pytest

import streamlite
from faults import hold, send
from wire import Recording, delta, sse, text_reply

pty = pytest.importorskip("pty") if sys.platform == "win32" else __import__("pty")

ROOT = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT = 20
PROMPT = "> "


def _env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "AZURE_", "STREAMLITE_")) and "PROXY" not in k.upper() and k != "NO_COLOR"}
    env.update(OPENAI_API_KEY="sk-test-chat-repl-1234", TERM="xterm", PYTHONIOENCODING="utf-8")
    return env


class Terminal:
    """The CLI on the slave side of a pty; we type on the master side and read all it prints."""

    def __init__(self, *args):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "streamlite.py", *args], cwd=str(ROOT), env=_env(),
                                     stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self.seen = ""
        self.raw = ""
        self.mark = 0  # expect() looks for text printed after this point

    def _read(self, deadline):
        ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child has gone and the slave is closed
            return False
        self.raw += data.decode("utf-8", "replace")
        # what a line editor adds when it echoes typing (PyPy's inserts each character with
        # "ESC [ 1 @" and toggles the cursor); colours stay, the tests look for them
        self.seen = re.sub(r"\x1b\[[0-9]*@|\x1b\[\?[0-9;]*[hl]", "", self.raw)
        return bool(data)

    def expect(self, text, timeout=TIMEOUT):
        """Wait until `text` is printed (after the last expect); return what came before it."""
        deadline = time.monotonic() + timeout
        while text not in self.seen[self.mark:]:
            if time.monotonic() > deadline or not self._read(deadline):
                raise AssertionError("never saw %r; the terminal shows:\n%s" % (text, self.seen[self.mark:]))
        found = self.seen.index(text, self.mark)
        before, self.mark = self.seen[self.mark:found], found + len(text)
        return before

    def type(self, text):
        os.write(self.master, text.encode("utf-8"))

    def line(self, text):
        self.type(text + "\r")

    def wait(self):
        deadline = time.monotonic() + TIMEOUT
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(min(deadline, time.monotonic() + 0.1))
        return self.proc.wait(max(0.0, deadline - time.monotonic()))

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        os.close(self.master)


@pytest.fixture
def terminal():
    opened = []

    def start(*args):
        opened.append(Terminal(*args))
        return opened[-1]

    yield start
    for term in opened:
        term.close()


def _plain(text):
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")


def test_a_session_turn_by_turn_with_commands(terminal, tmp_path):
    path, saved = tmp_path / "talk.json", tmp_path / "copy.json"
    replies = [text_reply("The Nile."), text_reply("Two lines seen."), text_reply("A block seen."), text_reply("Terse.")]
    with Recording(replies) as server:
        term = terminal("chat", "--base-url", server.url, "-c", str(path), "-s", "Be brief.")
        term.expect(PROMPT)
        term.line("Name a river")
        assert "The Nile." in term.expect(PROMPT)
        term.line("first line\\")
        term.expect("... ")
        term.line("second line")
        assert "Two lines seen." in term.expect(PROMPT)
        term.line('"""')
        term.line("a block")
        term.line("")
        term.line("  indented")
        term.line('"""')
        assert "A block seen." in term.expect(PROMPT)
        term.line("/system Be terse.")
        term.expect(PROMPT)
        term.line("/save " + str(saved))
        assert "saved 7 messages" in term.expect(PROMPT)
        term.line("Again")
        assert "Terse." in term.expect(PROMPT)
        term.type("\x04")  # Ctrl-D at the prompt
        assert term.wait() == streamlite.EXIT_OK
        bodies = server.bodies()
    users = [[m["content"] for m in body["messages"] if m["role"] == "user"][-1] for body in bodies]
    assert users == ["Name a river", "first line\nsecond line", "a block\n\n  indented", "Again"]
    assert bodies[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert bodies[3]["messages"][0] == {"role": "system", "content": "Be terse."}
    assert len(bodies[3]["messages"]) == 8  # system + three turns + the new question
    conversation = json.loads(path.read_text("utf-8"))
    assert conversation == bodies[3]["messages"] + [{"role": "assistant", "content": "Terse."}]
    assert json.loads(saved.read_text("utf-8")) == conversation[:7]


def test_ctrl_c_stops_a_reply_and_the_session_goes_on(terminal, tmp_path):
    path = tmp_path / "talk.json"
    stuck = [send(sse(delta({"role": "assistant", "content": "Once upon a"}), done=False)), hold(TIMEOUT)]
    with Recording([stuck, text_reply("Fresh answer.")]) as server:
        term = terminal("chat", "--base-url", server.url, "-c", str(path))
        term.expect(PROMPT)
        term.line("Tell a long story")
        term.expect("Once upon a")
        started = time.monotonic()
        term.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert "stopped; this turn is not kept" in term.expect(PROMPT)
        assert time.monotonic() - started < 5
        term.line("Something else")
        assert "Fresh answer." in term.expect(PROMPT)
        term.line("/exit")
        assert term.wait() == streamlite.EXIT_OK
        bodies = server.bodies()
    assert bodies[1]["messages"] == [{"role": "user", "content": "Something else"}]  # the stopped turn is gone
    assert json.loads(path.read_text("utf-8")) == [{"role": "user", "content": "Something else"},
                                                   {"role": "assistant", "content": "Fresh answer."}]


def test_ctrl_c_at_the_prompt_gives_a_fresh_prompt(terminal):
    with Recording([text_reply("Still here.")]) as server:
        term = terminal("chat", "--base-url", server.url)
        term.expect(PROMPT)
        term.type("half typed")
        term.expect("half typed")  # readline has taken the keys
        # Python's readline can miss a SIGINT that lands while it handles a key (it then waits in
        # select): a person never presses Ctrl-C within microseconds of a key, so press it again
        # if no fresh prompt came, at most three times
        for attempt in range(3):
            term.proc.send_signal(signal.SIGINT)
            try:
                term.expect(PROMPT, timeout=2)
                break
            except AssertionError:
                assert attempt < 2, "no fresh prompt after Ctrl-C"
        term.line("hello")
        assert "Still here." in term.expect(PROMPT)
        term.type("\x04")
        assert term.wait() == streamlite.EXIT_OK
        assert [b["messages"] for b in server.bodies()] == [[{"role": "user", "content": "hello"}]]


def test_resume_reasoning_dimmed_errors_keep_the_session(terminal, tmp_path):
    path = tmp_path / "talk.json"
    path.write_text(json.dumps([{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "before"}]), "utf-8")
    thinking = sse(delta({"role": "assistant", "reasoning_content": "Pondering."}), delta({"content": "Answer."}), delta({}, "stop"))
    failing = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 37\r\n\r\n" \
              b'{"error":{"message":"context too long"}}'[:37]
    with Recording([thinking, failing, text_reply("Recovered.")]) as server:
        term = terminal("chat", "--base-url", server.url, "-c", str(path), "--max-retries", "0")
        term.expect(PROMPT)
        term.line("Think first")
        shown = term.expect(PROMPT)
        assert "\x1b[2mPondering.\x1b[0m" in shown and "Answer." in _plain(shown)
        term.line("Too much")
        assert "this turn is not kept" in term.expect(PROMPT)
        term.line("/clear")
        term.expect(PROMPT)
        term.line("After clear")
        assert "Recovered." in term.expect(PROMPT)
        term.line("/quit")
        assert term.wait() == streamlite.EXIT_OK
        bodies = server.bodies()
    assert bodies[0]["messages"][:2] == [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "before"}]
    assert bodies[2]["messages"] == [{"role": "user", "content": "After clear"}]
    assert json.loads(path.read_text("utf-8")) == [{"role": "user", "content": "After clear"},
                                                   {"role": "assistant", "content": "Recovered."}]


def test_chat_reads_turns_from_a_pipe_too(tmp_path):
    with Recording([text_reply("One."), text_reply("Two.")]) as server:
        result = subprocess.run([sys.executable, "streamlite.py", "chat", "--base-url", server.url], cwd=str(ROOT),
                                env=_env(), input="first\nsecond\n", capture_output=True, text=True, timeout=TIMEOUT)
        bodies = server.bodies()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "One.\nTwo.\n"
    assert bodies[1]["messages"] == [{"role": "user", "content": "first"}, {"role": "assistant", "content": "One."},
                                     {"role": "user", "content": "second"}]


# Review findings: a turn that is not UTF-8, a conversation that cannot be written ------------


def _chat_pipe(url, data, *args, **environ):
    env = _env()
    env.update(environ)
    return subprocess.run([sys.executable, "streamlite.py", "chat", "--base-url", url, *args], cwd=str(ROOT),
                          env=env, input=data, capture_output=True, timeout=TIMEOUT)


NOT_UTF8 = b"streamlite: error: this turn is not valid UTF-8 (byte 0xe9 at offset 3); it is not sent, the session goes on\n"


@pytest.mark.parametrize("locale", [{"PYTHONIOENCODING": "utf-8:strict"},            # en_US.UTF-8: strict
                                    {"LC_ALL": "C.UTF-8", "PYTHONIOENCODING": ""},   # C: surrogateescape
                                    {"LC_ALL": "C", "PYTHONIOENCODING": ""}])
def test_a_turn_that_is_not_utf8_is_refused_and_the_session_goes_on(locale):
    with Recording([text_reply("ok")]) as server:
        result = _chat_pipe(server.url, b"caf\xe9\nhi\n", **locale)
        bodies = server.bodies()
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    assert result.stderr == NOT_UTF8 and result.stdout == b"ok\n"
    assert [b["messages"] for b in bodies] == [[{"role": "user", "content": "hi"}]]


@pytest.mark.skipif(hasattr(sys, "pypy_version_info"), reason="PyPy's own line editor (pyrepl) stops reading for "
                    "good at a byte that is not UTF-8, in any program's input(): nothing streamlite can do")
def test_a_turn_that_is_not_utf8_typed_on_a_terminal(terminal):
    # GNU readline drops the byte it cannot read as it echoes (the turn is what the screen
    # shows); without readline the turn is refused as from a pipe. Never a lone surrogate.
    with Recording([text_reply("ok")]) as server:
        term = terminal("chat", "--base-url", server.url)
        term.expect(PROMPT)
        os.write(term.master, b"caf\xff\r")  # never valid UTF-8 (no decoder waits for more)
        shown = term.expect(PROMPT)
        term.line("hi")
        assert "ok" in term.expect(PROMPT)
        term.line("/quit")
        assert term.wait() == streamlite.EXIT_OK
        sent = [b["messages"][-1]["content"] for b in server.bodies()]
    assert "Traceback" not in term.seen
    assert sent in (["caf", "hi"], ["hi"]), sent
    assert sent == ["caf", "hi"] or "this turn is not valid UTF-8" in shown


def test_a_failed_save_is_reported_and_the_session_goes_on(tmp_path):
    # /save to a folder that does not exist, and -c FILE in one: each write says why it failed
    missing = tmp_path / "no-such-dir" / "talk.json"
    with Recording([text_reply("ok"), text_reply("two")]) as server:
        result = _chat_pipe(server.url, ("/save %s\nhi\nagain\n" % missing).encode(), "-c", str(missing))
        bodies = server.bodies()
    err = result.stderr.decode()
    assert result.returncode == 0 and "Traceback" not in err, err
    assert result.stdout == b"ok\ntwo\n"
    assert err.count("streamlite: error: cannot write conversation %s: No such file or directory\n" % missing) == 3, err
    assert "the conversation is kept in memory; /save FILE writes it elsewhere" in err
    assert bodies[1]["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"},
                                     {"role": "user", "content": "again"}]
