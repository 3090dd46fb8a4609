"""Progress: periodic log lines off a terminal (done/total, rate, ETA), a tqdm bar on one, nothing when off."""

from __future__ import annotations

import logging

import pytest

from llmrec.progress import Progress, format_rate, format_seconds, progress, status_line


class FakeClock:
    """Each call advances ``step`` seconds: a loop of n items 'takes' n x step seconds."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_log_lines_every_interval_with_rate_and_eta(caplog):
    bar = Progress(range(10), desc="SASRec epochs", unit="epoch", tty=False, interval=10, clock=FakeClock(5))
    with caplog.at_level(logging.INFO, logger="llmrec.progress"):
        for i in bar:
            bar.set_postfix(loss=1.0 / (i + 1))
    lines = [r.getMessage() for r in caplog.records]
    # one clock read per item (+ start + end) at 5 s each: a line every 2 items, then the closing line
    assert len(lines) == 5
    assert lines[0] == "SASRec epochs: 2/10 (20%), 5 s/epoch, elapsed 0:10, ETA 0:40, loss=0.5"
    assert lines[-1].startswith("SASRec epochs: 10/10 (100%), ") and "ETA" not in lines[-1]
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_short_loops_stay_quiet_and_unknown_totals_still_report(caplog):
    with caplog.at_level(logging.INFO, logger="llmrec.progress"):
        assert list(Progress(range(3), desc="fast", tty=False, interval=60, clock=FakeClock(1))) == [0, 1, 2]
        assert caplog.records == []
        list(Progress(iter(range(4)), desc="stream", unit="row", tty=False, interval=0, clock=FakeClock(0.5)))
    assert caplog.records[0].getMessage().startswith("stream: 1 row, 2 row/s")


def test_off_and_terminal_modes(monkeypatch, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="llmrec.progress"):
        assert list(progress(range(5), desc="x", enable=False, interval=0)) == list(range(5))
        monkeypatch.setenv("LLMREC_PROGRESS", "0")
        assert Progress(range(5), tty=False, interval=0).mode == "off"
        monkeypatch.delenv("LLMREC_PROGRESS")
        bar = Progress(range(5), desc="bar", tty=True, interval=0)
        assert bar.mode == "bar" and list(bar) == list(range(5))
    assert caplog.records == []  # a terminal gets the bar, not log lines
    assert "bar" in capsys.readouterr().err


def test_not_a_terminal_by_default_under_pytest(caplog):
    with caplog.at_level(logging.INFO, logger="llmrec.progress"):
        assert list(progress(range(2), desc="piped", interval=0)) == [0, 1]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["piped", "piped"]


def test_formatting():
    assert format_seconds(59.6) == "1:00" and format_seconds(3725) == "1:02:05"
    assert format_rate(10, 2, "it") == "5 it/s" and format_rate(2, 10, "step") == "5 s/step"
    assert status_line("d", 0, None, 0, "it") == "d: 0 it, ? it/s, elapsed 0:00"


def test_trainer_callback_logs_steps_rate_eta_and_loss(caplog):
    pytest.importorskip("transformers")
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from llmrec.training.callbacks import ProgressLogCallback, trainer_progress

    cb = ProgressLogCallback("genrec training", interval=10, clock=FakeClock(3))
    state, control = TrainerState(), TrainerControl()
    state.max_steps, state.global_step = 20, 4  # resumed at step 4: rate counts this run's steps only
    args = TrainingArguments(output_dir="unused", report_to=[])
    with caplog.at_level(logging.INFO, logger="llmrec.progress"):
        cb.on_train_begin(args, state, control)
        for step in range(5, 21):
            state.global_step = step
            cb.on_log(args, state, control, logs={"loss": 2.0 - step / 20})
            cb.on_step_end(args, state, control)
        cb.on_train_end(args, state, control)
    lines = [r.getMessage() for r in caplog.records if r.name == "llmrec.progress"]
    assert lines[0].startswith("genrec training: step ") and "s/step" in lines[0] and "ETA" in lines[0]
    assert "loss=" in lines[0]
    assert lines[-1].startswith("genrec training: step 20/20 (100%)") and "loss=1" in lines[-1]
    disable_tqdm, callbacks = trainer_progress()  # pytest captures stderr: not a terminal
    assert disable_tqdm and isinstance(callbacks[0], ProgressLogCallback)


def test_unconfigured_logging_still_shows_the_lines(capsys):
    log = logging.getLogger("llmrec.test_unconfigured")
    log.propagate = False  # no handler anywhere: what a script without logging.basicConfig sees
    try:
        list(Progress(range(2), desc="quiet script", tty=False, interval=0, clock=FakeClock(1), log=log))
    finally:
        log.propagate = True
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("INFO llmrec.test_unconfigured: quiet script: 1/2 (50%), 1 it/s") and len(err) == 2


def test_early_stop_reports_where_the_loop_ended(caplog):
    with caplog.at_level(logging.INFO, logger="llmrec.progress"):
        for epoch in Progress(range(1, 101), desc="SASRec epochs", unit="epoch", tty=False, interval=25,
                              clock=FakeClock(10)):
            if epoch == 4:  # patience ran out after epoch 4
                break
    lines = [r.getMessage() for r in caplog.records]
    assert lines[-1].startswith("SASRec epochs: 4/100 (4%), ") and "ETA" not in lines[-1]
