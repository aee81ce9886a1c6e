"""A method registers in one place, anomseg/persistence/_registry.py: the command line,
the safe file format and the contract test follow from it, and these tests
fail when a new estimator is missing from it or from the API reference."""

from pathlib import Path

from sklearn.utils import get_tags

from anomseg.base import BaseAnomalySegmenter
from anomseg.cli._main import build_parser
from anomseg.persistence._registry import METHODS, PRESETS, estimator_classes, method_class
from anomseg.utils import all_estimators

DOCS = Path(__file__).parents[1] / "docs" / "api.rst"


def test_the_registry_holds_every_public_estimator():
    assert set(estimator_classes()) == {name for name, _ in all_estimators()}
    for name in METHODS:
        assert issubclass(method_class(name), BaseAnomalySegmenter), name


def test_nested_parameters_name_registered_methods():
    for name, method in METHODS.items():
        params = method_class(name)().get_params(deep=False)
        for parameter, nested in method.nested.items():
            assert parameter in params and nested in METHODS, (name, parameter)


def test_the_command_line_offers_every_registered_method():
    parser = build_parser()
    fit = parser._subparsers._group_actions[0].choices["fit"]
    [method] = [a for a in fit._actions if a.dest == "method"]
    assert sorted(method.choices) == sorted([*METHODS, *PRESETS])
    for _name, entry in [*METHODS.items(), *PRESETS.items()]:
        assert entry.summary in method.help


def test_presets_combine_registered_methods():
    for name, preset in PRESETS.items():
        assert name not in METHODS
        assert set(preset.methods) <= set(METHODS), name
        assert preset.ensemble >= 1 and 0 < preset.max_fpr < 1


def test_the_api_reference_lists_every_registered_estimator():
    text = DOCS.read_text()
    missing = [name for name in estimator_classes() if f"   {name}\n" not in text]
    assert not missing, f"add {missing} to docs/api.rst"


def test_tags_say_what_the_command_line_does_for_each_method():
    scaled = {
        name
        for name in METHODS
        if get_tags(method_class(name)()).anomaly_tags.requires_scaled_input
    }
    assert scaled == set(METHODS) - {"flair-threshold"}
    unlabelled = {
        name
        for name in METHODS
        if get_tags(method_class(name)()).anomaly_tags.learns_from_unlabelled
    }
    assert unlabelled == {"ascnet"}
