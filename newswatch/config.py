"""Every option of newswatch, in one place.

Values are layered, later wins: built-in defaults < a TOML config file
(``--config FILE`` or ``$NEWSWATCH_CONFIG``) < environment variables
(``NEWSWATCH_<SECTION>_<FIELD>``, e.g. ``NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS``)
< command-line flags. Defaults run the embedded setup: a local broker under
``$NEWSWATCH_HOME`` (default ``~/.newswatch``) and the bundled seeds.

Example config file::

    [kafka]
    bootstrap_servers = "b1:9092,b2:9092"
    articles_topic = "newswatch.articles"

    [connectors]
    feeds = ["https://feeds.bbci.co.uk/news/world/rss.xml"]
    poll_interval = 120
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from newswatch.errors import ConfigError

__all__ = [
    "PROJECT_ROOT",
    "BrokerSettings",
    "ConnectorSettings",
    "KafkaSettings",
    "ModelSettings",
    "NotifySettings",
    "RunnerSettings",
    "ServeSettings",
    "Settings",
    "StorySettings",
    "add_flags",
    "load_settings",
]

#: The checkout this package runs from (newswatch is installed in editable mode).
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _home() -> Path:
    return Path(os.environ.get("NEWSWATCH_HOME", Path.home() / ".newswatch")).expanduser()


@dataclass
class KafkaSettings:
    """Where records flow: broker address and topic names."""

    bootstrap_servers: str = ""
    """Comma-separated host:port list; empty means the embedded local broker."""
    articles_topic: str = "newswatch.articles"
    alerts_topic: str = "newswatch.alerts"
    decisions_topic: str = "newswatch.decisions"
    dead_letter_topic: str = "newswatch.dead-letters"
    stories_topic: str = "newswatch.stories"
    """Compacted: the latest state of each story, keyed by story id."""
    story_alerts_topic: str = "newswatch.story-alerts"
    """One record per story alert (first escalation, then each material change)."""
    partitions: int = 3
    """Partitions of the articles topic (and upper bound on pipeline parallelism)."""
    replication_factor: int = 1
    group_id: str = "newswatch-pipeline"
    """Consumer group of the pipeline; offsets are committed after outcomes are written."""


@dataclass
class BrokerSettings:
    """The embedded single-node KRaft broker."""

    data_dir: Path = field(default_factory=lambda: _home() / "kafka")
    # Below Linux's ephemeral range (32768-60999), so client sockets never hold them.
    port: int = 19092
    controller_port: int = 19093
    heap: str = "512m"
    lib_dir: Path = PROJECT_ROOT / "deploy" / "kafka" / "lib"
    start_timeout: float = 120.0


@dataclass
class ConnectorSettings:
    """Sources that feed the articles topic."""

    feeds: list[str] = field(default_factory=list)
    """Feed URLs, or files listing one URL per line."""
    files: list[Path] = field(default_factory=list)
    """Directories of documents (.txt, .html, .json, .jsonl, .xml)."""
    poll_interval: float = 300.0
    """Seconds between polls of one feed."""
    watch_interval: float = 5.0
    """Seconds between scans of watched directories."""
    state_dir: Path = field(default_factory=lambda: _home() / "state")
    """Connector checkpoints: validators, sent ids, feed health."""
    allow_private_addresses: bool = False
    """Allow feeds on loopback, private and link-local addresses (off: SSRF guard)."""
    allowed_networks: list[str] = field(default_factory=list)
    """CIDR blocks allowed even while private addresses are refused, e.g. an intranet feed host."""
    max_feed_bytes: int = 20 * 1024 * 1024
    max_entry_chars: int = 200_000
    """Longer entry texts are cut to this many characters (and logged)."""
    max_redirects: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    fetch_deadline: float = 120.0
    """Seconds one whole fetch (redirects and body) may take; stops slow-drip servers."""
    max_backoff: float = 3600.0
    """Upper bound, in seconds, of the per-feed backoff after errors."""
    user_agent: str = "newswatch/0.1 (+https://github.com/newswatch/newswatch)"


@dataclass
class ModelSettings:
    """The classifier."""

    artifacts_dir: Path = PROJECT_ROOT / "models" / "artifacts"
    version: str = "latest"
    """Artefact version to load; 'latest' is the newest under artifacts_dir."""
    batch_size: int = 32
    max_batch_wait: float = 0.0
    """Seconds to buffer a batch across bundles; 0 batches within each bundle.

    The Kafka reader hands over up to 500 records per bundle, so per-bundle
    batching already fills batches under load and adds no latency when idle.
    """
    threads: int = 0
    """Inference threads; 0 lets ONNX Runtime decide."""
    prefilter: bool = True
    """Skip the model for articles that name neither Taiwan nor China."""
    labelled_data: Path = PROJECT_ROOT.parent / "shared" / "data" / "labelled" / "dev.jsonl"
    """Labelled JSON-lines rows that `newswatch model train` and `model eval` read by default."""


@dataclass
class RunnerSettings:
    """The Beam runner that executes the pipeline."""

    runner: str = "prism"
    """prism (local default), flink (a Flink cluster via Beam's FlinkRunner)."""
    prism_location: Path = PROJECT_ROOT / ".tools" / "bin" / "prism"
    flink_master: str = "[local]"
    flink_job_server_jar: str = ""
    parallelism: int = 1
    beam_args: list[str] = field(default_factory=list)
    """Extra Beam pipeline options passed through verbatim."""


@dataclass
class StorySettings:
    """Online story clustering: which articles join one story, and when it is breaking."""

    enabled: bool = True
    """Group Taiwan-related articles into stories and raise story alerts."""
    similarity: float = 0.08
    """Least time-decayed cosine similarity between an article and a story for it to join."""
    decay_days: float = 8.0
    """Time constant, in days, of the similarity's decay with the gap to a story's last article."""
    idle_days: float = 3.0
    """A story with no new article for this many days (event time) goes dormant and is evicted."""
    keywords: int = 40
    """Weighted terms kept per story to match new articles against."""
    title_weight: float = 3.0
    """Weight of a headline word against a word of the text."""
    text_chars: int = 300
    """Characters of an article's text that count towards matching (the lead)."""
    breaking_outlets: int = 4
    """A story is breaking when this many distinct outlets cover it within `breaking_hours`."""
    breaking_hours: float = 6.0
    """The window, in hours of event time, of the breaking rule."""
    outlet_steps: list[int] = field(default_factory=lambda: [3, 5, 10, 20, 50])
    """Numbers of outlets at which an escalated story raises an update."""
    max_evidence: int = 5
    """Evidence sentences kept per story."""


@dataclass
class NotifySettings:
    """Delivery of story alerts to people: routes and sinks."""


@dataclass
class ServeSettings:
    """The web page and the metrics endpoint."""


@dataclass
class Settings:
    """All settings of one newswatch process."""

    home: Path = field(default_factory=_home)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    connectors: ConnectorSettings = field(default_factory=ConnectorSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    runner: RunnerSettings = field(default_factory=RunnerSettings)
    stories: StorySettings = field(default_factory=StorySettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    serve: ServeSettings = field(default_factory=ServeSettings)

    @property
    def embedded_broker(self) -> bool:
        """True when no external Kafka was configured."""
        return not self.kafka.bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        """The broker address clients should use."""
        return self.kafka.bootstrap_servers or f"127.0.0.1:{self.broker.port}"


_SECTIONS = ("kafka", "broker", "connectors", "model", "runner", "stories", "notify", "serve")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a config/env/flag value to the field's declared type."""
    origin = typing.get_origin(annotation)
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if annotation is int:
            return int(value)
        if annotation is float:
            return float(value)
        if annotation is Path:
            return Path(value).expanduser()
        if origin is list:
            (item,) = typing.get_args(annotation)
            items = value.split(",") if isinstance(value, str) else list(value)
            return [_coerce(v, item, where) for v in items if str(v).strip()]
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _apply(section_obj: Any, values: Mapping[str, Any], where: str) -> None:
    hints = _hints(type(section_obj))
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{where}: unknown option {key!r}")
        setattr(section_obj, key, _coerce(value, hints[key], f"{where}.{key}"))


def add_flags(parser: argparse.ArgumentParser, section: str, names: Sequence[str]) -> None:
    """Expose settings fields as ``--field-name`` flags on a subcommand parser.

    The help text is taken from the field's docstring-style attribute comment
    when available, and always shows the default.
    """
    cls = {
        "kafka": KafkaSettings,
        "broker": BrokerSettings,
        "connectors": ConnectorSettings,
        "model": ModelSettings,
        "runner": RunnerSettings,
        "stories": StorySettings,
        "notify": NotifySettings,
        "serve": ServeSettings,
    }[section]
    hints = _hints(cls)
    defaults = cls()
    for name in names:
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        dest = f"{section}__{name}"
        if hints[name] is bool:
            parser.add_argument(
                flag,
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"(default: {default})",
            )
        elif typing.get_origin(hints[name]) is list:
            parser.add_argument(
                flag, dest=dest, nargs="+", default=None, metavar=name.upper(), help="(repeatable)"
            )
        else:
            parser.add_argument(flag, dest=dest, default=None, help=f"(default: {default})")


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every subcommand takes."""
    parser.add_argument("--config", type=Path, default=None, help="TOML config file")
    parser.add_argument(
        "--home", type=Path, default=None, help="state directory (default ~/.newswatch)"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")


def load_settings(
    args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build `Settings` from defaults, config file, environment and parsed flags."""
    env = os.environ if env is None else env
    home = getattr(args, "home", None) or env.get("NEWSWATCH_HOME")
    settings = Settings()
    if home:
        home = Path(home).expanduser()
        settings = Settings(home=home)
        settings.broker.data_dir = home / "kafka"
        settings.connectors.state_dir = home / "state"

    config_path = getattr(args, "config", None) or env.get("NEWSWATCH_CONFIG")
    if config_path:
        path = Path(config_path).expanduser()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        for section, values in data.items():
            if section not in _SECTIONS or not isinstance(values, dict):
                raise ConfigError(f"{path}: unknown section [{section}]")
            _apply(getattr(settings, section), values, f"{path} [{section}]")

    for section in _SECTIONS:
        obj = getattr(settings, section)
        prefix = f"NEWSWATCH_{section.upper()}_"
        values = {
            k[len(prefix) :].lower(): v
            for k, v in env.items()
            if k.startswith(prefix) and k[len(prefix) :].lower() in _hints(type(obj))
        }
        _apply(obj, values, f"environment {prefix}*")

    if args is not None:
        for dest, value in vars(args).items():
            if "__" not in dest or value is None:
                continue
            section, name = dest.split("__", 1)
            _apply(getattr(settings, section), {name: value}, f"--{name.replace('_', '-')}")
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    if settings.kafka.partitions < 1:
        raise ConfigError("--partitions must be at least 1")
    if settings.runner.runner not in ("prism", "flink"):
        raise ConfigError(f"--runner must be 'prism' or 'flink', not {settings.runner.runner!r}")
    if settings.connectors.poll_interval <= 0:
        raise ConfigError("--poll-interval must be positive")
    if settings.model.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")


def replace(obj: Any, **changes: Any) -> Any:
    """`dataclasses.replace`, re-exported for callers that tweak settings in tests."""
    return dataclasses.replace(obj, **changes)
