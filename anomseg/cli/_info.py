"""``anomseg info``: what a model file holds, without running code from it."""

from __future__ import annotations

from ..utils._text import printable
from ._common import CommandError
from ._parser import add_command


def cmd_info(args):
    from ..persistence import model_info
    from ..persistence._format import check_file, file_kind

    def say(line):  # text from the file never reaches the terminal raw
        print(printable(line))

    path = check_file(args.model)
    if file_kind(path) == "pickle":
        raise CommandError(
            f"'{path}' is a pickle, which cannot be read without running the code it "
            "holds; only safe files can be inspected."
        )
    info = model_info(path)  # the model's own values, checked as on load
    calibration = info["calibration"]
    if info["checksum"] is None:
        say(
            f"{path}: a safe anomseg model file with no checksum (format 1): a damaged "
            "or altered file cannot be told from a whole one; predict and evaluate "
            "read it only with --allow-unchecked"
        )
    else:
        say(f"{path}: a safe anomseg model file (format {info['format_version']}, checksum OK)")
    say(f"  written by anomseg {info['anomseg_version']}")
    say(f"  steps: {' -> '.join(info['steps'])}")
    for key, value in sorted(info["params"].items()):
        if key == "estimators" and "members" in info:
            continue
        say(f"  {info['estimator']}.{key} = {value!r}")
    for member in info.get("members", []):
        changed = ", ".join(f"{k}={v!r}" for k, v in sorted(member["params"].items()))
        say(
            f"  member {member['name']}: {member['estimator']}({changed}), "
            f"own threshold {_figure(member['threshold'])}"
        )
    healthy = calibration.pop("healthy_data", None) or {}
    for key, value in calibration.items():
        say(f"  calibration {key}: {_figure(value)}")
    for key, value in healthy.items():  # as the final estimator saw them
        say(f"  healthy data {key.replace('_', ' ')}: {_figure(value)}")
    metadata = dict(info["metadata"])
    history = metadata.pop("calibrations", None)
    for key, value in metadata.items():
        if key == "channels" and isinstance(value, list):  # names, not a range
            value = ", ".join(map(str, value))
        say(f"  {key.replace('_', ' ')}: {_figure(value)}")
    if isinstance(history, list) and all(isinstance(step, dict) for step in history):
        _say_history(say, history, calibration)
    elif history is not None:
        say(f"  calibrations: {_figure(history)}")


def _say_history(say, history, calibration):
    """The calibrations that ``anomseg calibrate`` recorded, oldest first.
    They are a record of what was done: the figures above are the model's
    own, so a record that disagrees with them is pointed out."""
    say(f"  calibrations ({len(history)}, the last one in use):")
    for number, step in enumerate(history, 1):
        scans = step.get("scans")
        named = f" ({', '.join(map(str, scans))})" if isinstance(scans, list) else ""
        when = f" on {step['date']}" if "date" in step else ""
        say(
            f"    {number}. {step.get('by', '?')}{when}: {step.get('n_scans', '?')} "
            f"scan(s){named}, {step.get('n_calibration_pixels', '?')} voxels, "
            f"max_fpr {_figure(step.get('max_fpr'))}, threshold "
            f"{_figure(step.get('threshold'))} (achieved FPR "
            f"{_figure(step.get('achieved_fpr'))})"
        )
        for key in ("command", "anomseg_version", "excluded"):
            if step.get(key) is not None:
                say(f"       {key.replace('_', ' ')}: {_figure(step[key])}")
    last = history[-1]
    if any(last.get(key) != calibration[key] for key in ("threshold", "max_fpr")):
        say(
            "  note: the model's calibration differs from the last one recorded "
            "(it was calibrated again without a record); the model's own figures hold"
        )


def _figure(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return " to ".join(map(_figure, value)) if len(value) == 2 else str(value)
    return str(value)


def add_parser(commands):
    """The command's options, as a subparser of ``commands``."""
    info = add_command(
        commands,
        "info",
        "Show what a model file holds (its steps, parameters, calibration and "
        "healthy data) after checking its checksum, without running code from it.",
        cmd_info,
    )
    info.add_argument("model", metavar="MODEL")
