"""How a settings file is read and reported, for the agent and the console alike.

Precedence: explicit arguments, then ``PREFIX_*`` environment variables (``__`` between
nested keys), then the YAML file. Every problem becomes one line naming the key, never a
traceback and never a secret's value (a key ending in ``password``, ``_hash`` or ``secret``).
Relative paths from the file resolve against the file's directory (:func:`resolve_paths`).
What the agent's settings *are* is :mod:`edge_agent.config`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, YamlConfigSettingsSource

_S = TypeVar("_S", bound=BaseSettings)


class ConfigError(Exception):
    """Invalid configuration; ``problems`` holds one human-readable line per bad key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class YamlEnvSettings(BaseSettings):
    """Settings from arguments, then the environment, then a YAML file (``yaml_file`` in
    ``model_config``): the agent's and the console's precedence, defined once."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then environment, then the YAML file.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = settings_cls.model_config.get("yaml_file")
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


def error_lines(exc: ValidationError) -> list[str]:
    """One line per problem, naming the key; a secret's value is never shown."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = (
            ""
            if isinstance(value, dict | list) or key.endswith(("password", "_hash", "secret"))
            else f" (got {value!r})"
        )
        lines.append(f"config key {key}: {msg}{shown}")
    return lines


def env_sets(key: str, prefix: str) -> bool:
    """Whether the environment sets the dotted config ``key`` (``PREFIX_A__B``)."""
    name = prefix + key.replace(".", "__").upper()
    return any(k.upper() == name for k in os.environ)


def resolve_paths(settings: _S, base: Path, keys: tuple[str, ...], env_prefix: str) -> _S:
    """Relative paths from the file (or defaults) resolved against the file's directory.

    ``keys`` are dotted config keys holding paths; one set by an environment variable (named
    with ``env_prefix``) stays relative to the working directory."""
    for key in keys:
        *parents, leaf = key.split(".")
        owner: Any = settings
        for part in parents:
            owner = getattr(owner, part)
        value = getattr(owner, leaf)
        if value is not None and not value.is_absolute() and not env_sets(key, env_prefix):
            setattr(owner, leaf, base / value)  # (validate_assignment is off)
    return settings


def load_settings_class(settings_base: type[_S], path: Path | str | None, **overrides: Any) -> _S:
    """``settings_base`` from YAML (if given) + environment, one line per problem.

    Shared by the agent and the console (``edge_console``) so both read and report their
    configuration the same way.
    """
    yaml_file: Path | None = None
    if path is not None:
        yaml_file = Path(path)
        if not yaml_file.is_file():
            raise ConfigError([f"config file {yaml_file.absolute()} not found"])
        try:
            import yaml

            data = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"config file {yaml_file}: cannot read: {exc}"]) from None
        except yaml.YAMLError as exc:
            # PyYAML's message spans several lines (context, mark, caret): keep it to one.
            problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
            where = (
                f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
                if problem and mark is not None
                else " ".join(str(exc).split())
            )
            raise ConfigError([f"config file {yaml_file}: invalid YAML: {where}"]) from None
        if data is not None and not isinstance(data, dict):
            raise ConfigError([f"config file {yaml_file}: top level must be a mapping"])
    # A subclass per file keeps the file path out of global state.
    settings_cls: type[_S] = type(
        "File" + settings_base.__name__,
        (settings_base,),
        {"model_config": {**settings_base.model_config, "yaml_file": yaml_file}},
    )
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(error_lines(exc)) from None
