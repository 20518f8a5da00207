"""Every JSON file the toolkit reads back is checked against what it needs: a file that is
not what its name says is one line naming the file and the field, exit 2."""
import json
import shutil

import pytest

from sonar_t5.common.errors import UserError
from sonar_t5.common.schemas import HISTORY_RECORD, RUN_CONFIG, SUMMARY, read_checked

from .conftest import assert_user_error, run_script


def test_the_checker_names_the_field_and_what_it_holds(tmp_path):
    path = tmp_path / "x.json"

    def problem(value, schema):
        path.write_text(json.dumps(value))
        with pytest.raises(UserError) as caught:
            read_checked(path, schema, "x.json")
        return str(caught.value)

    assert problem([1], SUMMARY).startswith("x.json holds a JSON list, not an object, ")
    assert "has no field 'generation'" in problem({"bleu": 1.0, "num_samples": 2}, SUMMARY)
    assert "field 'bleu' is a JSON string, not a number" in problem({"bleu": "1"}, SUMMARY)
    assert "field 'num_samples' is a JSON true/false, not an integer" in problem(
        {"bleu": 1, "num_samples": True}, SUMMARY)
    assert "has no field 'diversity.unique_ratio'" in problem(
        {"bleu": 1, "num_samples": 2, "generation": {"num_beams": 4}, "diversity": {}}, SUMMARY)
    assert "field 'args' is a JSON list, not an object" in problem({"args": []}, RUN_CONFIG)
    assert "entry 2: field 'epoch'" in problem(
        [{"epoch": 1, "train_loss": None, "val_loss": 1, "val_bleu": 2},
         {"epoch": "2", "train_loss": 1, "val_loss": 1, "val_bleu": 2}], [HISTORY_RECORD])


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    return shutil.copytree(tiny_run[0], tmp_path / "run")


def rewrite(path, change):
    value = json.loads(path.read_text())
    path.write_text(json.dumps(change(value)))


@pytest.mark.parametrize("name, change, fragment", [
    ("summary_list", lambda s: [s], "validation_summary.json holds a JSON list, not an object"),
    ("no_generation", lambda s: {k: v for k, v in s.items() if k != "generation"},
     "validation_summary.json has no field 'generation'"),
    ("no_diversity", lambda s: {k: v for k, v in s.items() if k != "diversity"},
     "validation_summary.json has no field 'diversity'"),
])
def test_the_table_on_a_damaged_summary_is_one_line(run_copy, tmp_path, name, change, fragment):
    summary = run_copy / "results" / "test" / "validation_summary.json"
    rewrite(summary, change)
    assert_user_error(run_script("plot_training_curves.py", "--table", summary.parent,
                                 "--output", tmp_path / "table"), fragment, str(summary))


@pytest.mark.parametrize("change, fragment", [
    (lambda c: [c], "the run's config.json holds a JSON list, not an object"),
    (lambda c: {k: v for k, v in c.items() if k != "args"}, "the run's config.json has no "
                                                            "field 'args'"),
])
def test_significance_and_the_table_on_a_damaged_run_config_are_one_line(run_copy, tiny_run,
                                                                         tmp_path, change,
                                                                         fragment):
    rewrite(run_copy / "config.json", change)
    assert_user_error(run_script("-m", "sonar_t5.evaluation.significance", tiny_run[0], run_copy),
                      fragment, str(run_copy / "config.json"))
    assert_user_error(run_script("plot_training_curves.py", "--table", run_copy,
                                 "--output", tmp_path / "table"), fragment)


def test_significance_on_a_summary_that_is_a_list_is_one_line(run_copy, tiny_run):
    rewrite(run_copy / "results" / "test" / "validation_summary.json", lambda s: [s])
    assert_user_error(run_script("-m", "sonar_t5.evaluation.significance", tiny_run[0], run_copy),
                      "validation_summary.json holds a JSON list, not an object")


@pytest.mark.parametrize("change, fragment", [
    (lambda h: {"epochs": h}, "training_history.json holds a JSON object, not a list"),
    (lambda h: [{**h[0], "val_bleu": "high"}], "entry 1: field 'val_bleu' is a JSON string, "
                                               "not a number"),
])
def test_curves_of_a_damaged_history_are_one_line(run_copy, change, fragment):
    rewrite(run_copy / "training_history.json", change)
    assert_user_error(run_script("plot_training_curves.py", "--checkpoint_dir", run_copy),
                      fragment)


def test_by_length_on_a_translations_file_that_is_not_utf8_is_one_line(run_copy, tmp_path):
    outputs = run_copy / "results" / "test" / "translations.txt"
    outputs.write_bytes(outputs.read_bytes() + b"x\tcaf\xe9\tcaf\xe9\n")
    assert_user_error(run_script("plot_training_curves.py", "--by_length", outputs,
                                 "--output", tmp_path / "by_length.png"), "not UTF-8 text",
                      str(outputs))
