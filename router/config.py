"""The router's configuration: pydantic models and `load_config`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from router.errors import ConfigError
from router.sources.azure_queue import AzureStorageQueueConfig
from router.sources.base import RouteTarget, SourceConfig
from router.sources.kafka import KafkaConfig
from router.sources.stdin import StdInputConfig
from router.sources.zeromq import ZeroMQConfig

SOURCE_CONFIGS: tuple[type[SourceConfig], ...] = (
    StdInputConfig,
    AzureStorageQueueConfig,
    ZeroMQConfig,
    KafkaConfig,
)
PUBLISHER_TYPES = tuple(
    model.model_fields["publisher_type"].annotation.__args__[0]  # type: ignore[union-attr]
    for model in SOURCE_CONFIGS
)

AnySourceConfig = Annotated[Union[SOURCE_CONFIGS], Field(discriminator="publisher_type")]  # noqa: UP007


class RouterConfig(BaseModel):
    """The whole router: its sources ("threads", as the original tool called them) and limits."""

    model_config = ConfigDict(extra="forbid")

    threads: list[AnySourceConfig] = Field(  # type: ignore[valid-type]
        min_length=1, description="The sources to listen to, each with its routes."
    )
    max_concurrency: int = Field(
        default=8, ge=1, le=1000, description="Messages dispatched to Prefect at the same time."
    )
    missing_deployments: Literal["fail", "warn"] = Field(
        default="fail",
        description=(
            "At start-up, a route naming a deployment that does not exist: 'fail' refuses to "
            "start; 'warn' logs it and rejects that route's messages until it is deployed."
        ),
    )
    shutdown_grace_seconds: float = Field(
        default=15.0,
        ge=0,
        description="On shutdown, how long in-flight messages may take to get their flow runs.",
    )
    retry_initial_seconds: float = Field(
        default=0.5, gt=0, description="First backoff delay after a transient Prefect failure."
    )
    retry_max_seconds: float = Field(
        default=30.0, gt=0, description="Longest backoff delay after transient Prefect failures."
    )
    cancel_check_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often the router checks whether its own flow run was cancelled.",
    )

    @model_validator(mode="after")
    def _unique_source_names(self) -> RouterConfig:
        seen: dict[str, int] = {}
        for index, source in enumerate(self.threads):
            name = source.source_name
            if name in seen:
                raise ValueError(
                    f"threads[{index}] and threads[{seen[name]}] are both named '{name}': "
                    "give each a distinct `name`"
                )
            seen[name] = index
        return self

    def routes(self) -> dict[str, dict[str, RouteTarget]]:
        """Routes per source name."""
        return {source.source_name: source.message_flow_actions for source in self.threads}

    def deployments(self) -> list[str]:
        """Every deployment a route names, once each, in config order."""
        names = (
            target.deployment
            for source in self.threads
            for target in source.message_flow_actions.values()
        )
        return list(dict.fromkeys(names))


def parse_config(data: Any) -> RouterConfig:
    """Validate already-parsed config data; raise ConfigError with one line per problem."""
    if isinstance(data, RouterConfig):
        return data
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def load_config(path: str | Path) -> RouterConfig:
    """Read a config file (JSON with // comments, or YAML) and validate it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}"]) from None
    return parse_config(parse_config_text(text, path.suffix.lower(), str(path)))


def parse_config_text(text: str, suffix: str = ".json", origin: str = "config") -> Any:
    """Parse config text: YAML for .yaml/.yml, otherwise JSON allowing // and /* */ comments."""
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"{origin}: not valid YAML: {_one_line(str(exc))}"]) from None
        except Exception as exc:  # PyYAML's constructors fail on some tags (!!bool abc...)
            raise ConfigError([f"{origin}: not acceptable YAML: {_one_line(str(exc))}"]) from None
    try:
        return json.loads(strip_json_comments(text))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [f"{origin}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"]
        ) from None
    except (ValueError, RecursionError) as exc:  # beyond the parser's limits
        raise ConfigError(
            [f"{origin}: not acceptable JSON: {exc or 'nested too deeply'}"]
        ) from None


def strip_json_comments(text: str) -> str:
    """Blank out // and /* */ comments outside strings, keeping line and column numbers."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        char = text[i]
        if in_string:
            out.append(char)
            if char == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end == -1 else end
            out.append(" " * (end - i))
            i = end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end == -1 else end + 2
            out.append("".join(c if c == "\n" else " " for c in text[i:end]))
            i = end
            continue
        else:
            out.append(char)
        i += 1
    return "".join(out)


def format_validation_error(exc: ValidationError) -> list[str]:
    """One line per problem, naming the field path: `threads[1].queue_name: field required`."""
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        if len(loc) > 2 and loc[0] == "threads" and isinstance(loc[1], int):
            del loc[2]  # the discriminated union's tag, e.g. threads[0].<StdInput>.name
        kind = error["type"]
        if kind == "union_tag_invalid":
            expected = ", ".join(f"'{t}'" for t in PUBLISHER_TYPES)
            tag = error.get("ctx", {}).get("tag")
            message = f"unknown '{tag}', expected one of {expected}"
            loc.append("publisher_type")
        elif kind == "union_tag_not_found":
            message = "field required"
            loc.append("publisher_type")
        elif kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "model_type" and "RouteTarget" in error["msg"]:
            message = "expected 'Flow Name/deployment-name' or an object with a `deployment`"
        elif kind == "model_type" and not loc:
            message = "expected an object with a `threads` list"
        else:
            message = error["msg"].removeprefix("Value error, ")
            if kind == "missing":
                message = "field required"
        lines.append(_printable(f"{_path(loc) or 'config'}: {message}"))
    return lines


def _printable(text: str) -> str:
    """Control characters from the input (a key with a newline...) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _path(loc: list[Any]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path
