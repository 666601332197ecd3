"""Progress output: a bar on a terminal, plain lines in a log."""

import io

from partsearch.progress import LogLines, tqdm


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_whole_lines_not_carriage_returns():
    out = io.StringIO()
    for _ in tqdm(range(700), desc="epoch 1/10", file=out, leave=False):
        pass
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert 1 <= len(lines) <= 3  # the start, maybe one on the way, the end
    assert lines[-1].startswith("epoch 1/10: 100% 700/700")


def test_a_log_line_is_written_at_most_once_per_interval():
    out = io.StringIO()
    bar = LogLines(total=100, desc="x", file=out, interval=3600, mininterval=0)
    for _ in range(100):
        bar.update(1)
        bar.set_postfix(loss="0.1")
    bar.close()
    assert [line.split(":")[1].split()[1] for line in out.getvalue().splitlines()] == ["0/100", "100/100"]


def test_a_log_line_follows_each_interval(monkeypatch):
    clock = iter(range(0, 1000, 5))  # 5 s per update
    monkeypatch.setattr("partsearch.progress.time.monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = LogLines(total=4, desc="x", file=out, interval=10, mininterval=0)
    for _ in range(4):
        bar.update(1)
    bar.close()
    counts = [line.split()[2] for line in out.getvalue().splitlines()]
    assert counts == ["0/4", "2/4", "4/4"]


def test_a_terminal_gets_the_redrawn_bar():
    out = Terminal()
    for _ in tqdm(range(3), file=out, mininterval=0):
        pass
    assert "\r" in out.getvalue()
