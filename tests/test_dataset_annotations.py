"""Annotations: strings only, blanks, and clear errors naming the rows."""

import os

import numpy as np
import pandas as pd
import pytest

from slidetiles.dataset.annotations import blank_mask, load_annotations
from slidetiles.errors import AnnotationsError


def write(tmp_path, text, name="ann.csv", mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def test_every_value_is_a_string_and_missing_cells_read_as_slideflow_reads_them(tmp_path):
    # Slideflow reads annotations with pandas.read_csv(dtype=str) and fills what pandas takes for missing with '':
    # 'nan', 'NA' and 'None' are blank there, ' NA' and 'null ' (spaces around) and 'none' are not.
    path = write(tmp_path, "patient,slide,flag,score,note\np1,s1,FALSE,0,nan\np2,s2,,1.50,NA\np3,s3, ,007,None\n"
                           "p4,s4,  ,-0, NA\np5,s5,none,x,null \n")
    ann = load_annotations(path)
    frame = ann.frame
    assert frame.loc["s1", "flag"] == "FALSE" and frame.loc["s1", "score"] == "0" and frame.loc["s1", "note"] == ""
    assert frame.loc["s2", "flag"] == "" and frame.loc["s2", "score"] == "1.50" and frame.loc["s2", "note"] == ""
    assert frame.loc["s3", "score"] == "007" and frame.loc["s3", "note"] == ""
    assert frame["note"].tolist()[3:] == [" NA", "null "] and frame.loc["s5", "flag"] == "none"
    assert all(isinstance(v, str) for v in frame.to_numpy().ravel())
    # Slideflow's filter_blank drops '' and ' ' (sf.util.EMPTY), not two spaces.
    assert blank_mask(frame["flag"]).tolist() == [False, True, True, False, False]
    assert blank_mask(frame["note"]).tolist() == [True, True, True, False, False]
    assert ann.path == path and len(ann.sha256) == 64


def test_dataframe_missing_values_are_blank_and_others_str():
    frame = pd.DataFrame({"patient": ["p1", "p2"], "slide": ["s1", "s2"], "x": [np.nan, 1.5], "y": [None, "nan"],
                          "n": [0, 3]})
    ann = load_annotations(frame)
    assert ann.frame["x"].tolist() == ["", "1.5"]
    assert ann.frame["y"].tolist() == ["", "nan"]
    assert ann.frame["n"].tolist() == ["0", "3"]
    assert ann.path is None
    assert frame["x"].isna().tolist() == [True, False]  # the caller's frame is untouched


def test_bom_is_not_part_of_the_first_column(tmp_path):
    path = write(tmp_path, "\ufeffpatient,slide\np1,s1\n".encode("utf-8"), mode="wb")
    assert load_annotations(path).columns == ["patient", "slide"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("slide,label\ns1,x\n", r"missing required column\(s\) \['patient'\]; the columns are \['slide', 'label'\]"),
        ("patient,label\np1,x\n", r"missing required column\(s\) \['slide'\].*never rewrites your CSV"),
        ("patient;slide\np1;s1\n", r"missing required column"),
        ("patient,slide,x,x\np1,s1,1,2\n", r"duplicated column\(s\) \['x'\]"),
        ("", "empty"),
        ("patient,slide\np1,s1\n,s2\n", r"blank 'patient' in line 3"),
        ("patient,slide\np1,s1\np2,  \n", r"blank 'slide' in line 3"),
    ],
)
def test_structural_errors_name_file_and_rows(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(AnnotationsError, match=message) as info:
        load_annotations(path)
    assert path in str(info.value)


def test_slide_listed_twice_names_the_lines(tmp_path):
    path = write(tmp_path, "patient,slide\np1,s1\np1,s2\np1,s1\np3,s3\np3,s3\n")
    with pytest.raises(AnnotationsError, match=r"2 slide\(s\) listed more than once: 's1' \(line 2 and line 4\), 's3' \(line 5 and line 6\)"):
        load_annotations(path)


def test_slide_under_two_patients_names_patients_and_lines(tmp_path):
    path = write(tmp_path, "patient,slide\np1,s1\np2,s1\np1,s2\n")
    with pytest.raises(AnnotationsError, match=r"'s1' under patients \['p1', 'p2'\] \(line 2 and line 3\)"):
        load_annotations(path)


def test_dataframe_errors_name_index_labels():
    frame = pd.DataFrame({"patient": ["p1", "p2"], "slide": ["s1", "s1"]}, index=["a", "b"])
    with pytest.raises(AnnotationsError, match=r"annotations DataFrame.*row 'a' and row 'b'"):
        load_annotations(frame)
    with pytest.raises(AnnotationsError, match="CSV path or a pandas DataFrame"):
        load_annotations(42)


def test_missing_file(tmp_path):
    with pytest.raises(AnnotationsError, match="not found"):
        load_annotations(str(tmp_path / "nope.csv"))


def test_csv_is_read_not_written(tmp_path):
    path = write(tmp_path, "patient,label\np1,x\n")
    before = (open(path, "rb").read(), os.stat(path).st_mtime_ns)
    with pytest.raises(AnnotationsError):
        load_annotations(path)
    assert (open(path, "rb").read(), os.stat(path).st_mtime_ns) == before
    assert os.listdir(tmp_path) == ["ann.csv"]
