"""The schema layer of the product's configuration files: one way to read, check and explain them.

Every configuration file of the product (zero-shot tasks, preprocessing, the burn specialist, the
DICOM node's settings) is described by pydantic models that forbid unknown keys. `load_yaml_file`
reads a file, `validate_document` checks it against its model, and every problem becomes one line
naming the file and the dotted key (`tasks.ct.labels[2].code: Field required`), so that a PACS
administrator can find and fix it. Cross-file checks (a selection without a task) are made at start-
up by `app.configuration`, before any study is touched.

`CONFIG_DIR` is where the bundled configuration files are (`app/config/`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

#: The bundled configuration files: selection rules, zero-shot tasks, preprocessing, burn specialist.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "app" / "config"

#: pydantic configuration of every schema: unknown keys are errors, values are immutable once read.
STRICT = ConfigDict(extra="forbid", frozen=True)
#: The same for schemas written as pydantic dataclasses (which say `frozen=True` in their decorator).
STRICT_DATACLASS = ConfigDict(extra="forbid")

T = TypeVar("T")


class ConfigurationError(ValueError):
    """A configuration file is unusable; the message names the file and the key to fix."""


class ConfigModel(BaseModel):
    """Base of the schema models: unknown keys are errors, values are immutable once read."""

    model_config = STRICT


def dotted_key(location: tuple[Any, ...]) -> str:
    """A pydantic error location as the dotted key an administrator looks for (`a.b[2].c`)."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif str(part).startswith("function-"):  # validator wrappers pydantic puts into the path
            continue
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def explain(exc: ValidationError, *, prefix: str = "") -> list[str]:
    """One line per problem: the dotted key and what is wrong with it (never the whole value)."""
    lines = []
    for error in exc.errors(include_url=False):
        key = dotted_key(tuple(error["loc"]))
        if error["type"] == "missing":
            message = "required setting is missing"
        elif error["type"] == "extra_forbidden":
            message = "unknown setting (check its spelling and section)"
        else:
            message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{prefix}{key}: {message}")
    return lines


def load_yaml_file(path: Path, error: type[ConfigurationError] = ConfigurationError, what: str = "configuration file") -> Any:
    """The parsed YAML document of `path` (None for an empty file); `error` names the file if unreadable."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{what} {path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text: {exc}") from exc


def validate_document(
    document: Any, schema: type[T], *, source: Path | str, error: type[ConfigurationError] = ConfigurationError
) -> T:
    """`document` checked against `schema` (a pydantic model or dataclass); `error` lists every problem."""
    try:
        return TypeAdapter(schema).validate_python({} if document is None else document)
    except ValidationError as exc:
        problems = explain(exc)
        if len(problems) == 1:
            raise error(f"{source}: {problems[0]}") from None
        raise error(f"{source} has {len(problems)} problems:\n  " + "\n  ".join(problems)) from None


def load_config_file(path: Path, schema: type[T], *, error: type[ConfigurationError] = ConfigurationError, what: str) -> T:
    """Read the YAML file at `path` and check it against `schema`; `error` names the file and key."""
    return validate_document(load_yaml_file(path, error, what), schema, source=path, error=error)
