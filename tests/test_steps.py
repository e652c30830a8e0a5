"""run_step: an expected failure is one line in the rule's log; a bug keeps its traceback."""

import logging

import pytest

from slidetiles.errors import DatasetError
from slidetiles.pipeline.steps import run_step


def run(tmp_path, step):
    log = tmp_path / "rule.log"
    try:
        with pytest.raises(SystemExit) as stop:
            run_step(step, log_path=str(log), rule="manifest")
    finally:
        # run_step configures the root logger for a whole job process; give the file back.
        logging.basicConfig(force=True, handlers=[logging.NullHandler()])
    return stop.value.code, log.read_text()


def test_expected_failure_is_one_line(tmp_path):
    def step():
        raise DatasetError("annotations.csv: no 'slide' column")

    code, text = run(tmp_path, step)
    assert code == 1
    assert "rule manifest failed: annotations.csv: no 'slide' column" in text and "Traceback" not in text


def test_missing_file_is_one_line(tmp_path):
    def step():
        open(tmp_path / "nowhere.csv")

    code, text = run(tmp_path, step)
    assert code == 1 and "No such file or directory" in text and "Traceback" not in text


def test_bug_keeps_its_traceback(tmp_path):
    def step():
        return {}["tile_px"]

    code, text = run(tmp_path, step)
    assert code == 1
    assert "unexpected error" in text and "Traceback" in text and "KeyError: 'tile_px'" in text
