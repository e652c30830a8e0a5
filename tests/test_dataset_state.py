"""The Dataset's state as a value: what chaining shares and replaces, the manifest and summary working from a state,
and the modules around it importing each other in one direction only."""

import ast
import inspect
import os

import pytest

import slidetiles.dataset
from helpers import RETAINED
from slidetiles import Dataset
from slidetiles.dataset.clipping import ClipSpec
from slidetiles.dataset.manifest import manifest_document, read_state
from slidetiles.dataset.state import DatasetState, SelectionSpec
from slidetiles.dataset.summary import render_summary
from slidetiles.errors import DatasetError
from slidetiles.splits.spec import SplitSpec

DATASET_DIR = os.path.dirname(slidetiles.dataset.__file__)


def test_chaining_replaces_the_spec_and_shares_what_was_loaded(cohort_ds):
    state = cohort_ds.state
    assert state.spec == SelectionSpec()
    chained = cohort_ds.filter(filters={"site": ["A", 1]}, filter_blank="flag").clip(5)
    assert chained.state.loaded is state.loaded  # the tables are read once, whatever the chain
    assert chained.state.spec == SelectionSpec(
        filters={"site": ("A", "1")}, filter_blank=("flag",), clip=ClipSpec(max_tiles=5)
    )
    assert cohort_ds.state is state and cohort_ds.state.spec == SelectionSpec()  # the original is untouched
    with pytest.raises(AttributeError):
        cohort_ds.state = state  # read-only
    with pytest.raises(AttributeError):
        state.spec = SelectionSpec()  # frozen


def test_the_selection_is_computed_once_per_state(cohort_ds):
    state = cohort_ds.filter(min_tiles=5).state
    assert state.selection is state.selection
    assert sorted(state.selection.table["slide"]) == sorted(s for s in RETAINED if s not in ("s7", "s8"))


def test_a_dataset_over_a_changed_state(cohort_ds):
    state = cohort_ds.state.with_filters(filters={"label": ["normal"]}).with_clip(ClipSpec(max_tiles=3))
    ds = Dataset.from_state(state)
    assert ds.state is state
    assert ds.manifest() == cohort_ds.filter(filters={"label": "normal"}).clip(3).manifest()
    assert ds.slides() == ["s3", "s4"]


def test_state_methods_check_columns_as_the_dataset_methods_do(cohort_ds):
    with pytest.raises(DatasetError, match=r"filter\(filters=...\): no annotation column\(s\) \['nope'\]"):
        cohort_ds.state.with_filters(filters={"nope": "x"})
    with pytest.raises(DatasetError, match="no active filter on 'site'"):
        cohort_ds.state.without_filters(filters="site")


def test_manifest_and_summary_work_from_the_state(cohort_ds, tmp_path):
    ds = cohort_ds.filter(filter_blank="flag").clip(6, "patient").balance("label")
    path = ds.to_manifest(tmp_path / "m.json")
    state = read_state(path)
    assert isinstance(state, DatasetState) and state.loaded.origin == os.fspath(path)
    assert state.spec == ds.state.spec
    # The document of the state read back is the one written (the file adds only "base").
    assert manifest_document(state) == manifest_document(ds.state)
    assert render_summary(ds.state) == ds.summary(show=False)


def _runtime_imports(path: str) -> set[str]:
    """Modules ``path`` imports at run time, anywhere in the file (imports under ``if TYPE_CHECKING:`` aside)."""
    found = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                self.generic_visit(node)

        def visit_Import(self, node):
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)

    with open(path, encoding="utf-8") as f:
        Visitor().visit(ast.parse(f.read()))
    return found


@pytest.mark.parametrize("module", ["state", "selection", "labels", "manifest", "summary"])
def test_the_state_modules_never_import_the_dataset_class(module):
    imports = _runtime_imports(os.path.join(DATASET_DIR, f"{module}.py"))
    assert "slidetiles.dataset.dataset" not in imports
    assert "slidetiles.dataset.Dataset" not in imports


def test_split_defaults_are_the_spec_defaults():
    spec = SplitSpec()
    split = inspect.signature(Dataset.split).parameters
    assert (split["model_type"].default, split["site_labels"].default, split["seed"].default,
            split["time_limit"].default) == (spec.model_type, spec.site_labels, spec.seed, spec.time_limit)
    kfold = inspect.signature(Dataset.kfold_split).parameters
    assert (kfold["k"].default, kfold["seed"].default) == (spec.k_fold, spec.seed)
