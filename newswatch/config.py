"""Every option of newswatch, in one place: typed sections on pydantic-settings.

Values are layered, later wins: built-in defaults < a TOML config file
(``--config FILE`` or ``$NEWSWATCH_CONFIG``) < environment variables
(``NEWSWATCH_<SECTION>_<FIELD>``, e.g. ``NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS``)
< command-line flags. Defaults run the embedded setup: a local broker under
``$NEWSWATCH_HOME`` (default ``~/.newswatch``) and the bundled seeds.

Each field carries its type, default, constraints and, as its attribute
docstring, the help text its ``--flag`` shows. List fields take a comma-separated
value from the environment. Unknown options are refused wherever they come from.

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
import json
import os
import tomllib
import typing
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from newswatch.errors import ConfigError

__all__ = [
    "PROJECT_ROOT",
    "BrokerSettings",
    "CommandSettings",
    "ConnectorSettings",
    "EmailSettings",
    "FileSettings",
    "KafkaSettings",
    "ModelSettings",
    "NotifySettings",
    "RouteSettings",
    "RunnerSettings",
    "ServeSettings",
    "Settings",
    "StorySettings",
    "WebhookSettings",
    "env_name",
    "field_help",
    "load_settings",
    "replace",
    "settings_sections",
]

#: The checkout this package runs from (newswatch is installed in editable mode).
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _home() -> Path:
    return Path(os.environ.get("NEWSWATCH_HOME", Path.home() / ".newswatch")).expanduser()


def _items(value: Any) -> Any:
    """A list field's value from text: a JSON list, or comma-separated items."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


UserPath = Annotated[Path, AfterValidator(Path.expanduser)]
Strings = Annotated[list[str], BeforeValidator(_items)]
Paths = Annotated[list[UserPath], BeforeValidator(_items)]
Ints = Annotated[list[int], BeforeValidator(_items)]


class _Section(BaseModel):
    """A table of settings: typed, documented fields; unknown keys are errors."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )


class KafkaSettings(_Section):
    """Where records flow: broker address and topic names."""

    bootstrap_servers: str = ""
    """Comma-separated host:port list; empty means the embedded local broker."""
    articles_topic: str = "newswatch.articles"
    """Articles from the connectors, keyed by article id (kept 7 days)."""
    alerts_topic: str = "newswatch.alerts"
    """Compacted: article-level escalation alerts, keyed by alert id."""
    decisions_topic: str = "newswatch.decisions"
    """Compacted: the outcome of every classified article, keyed by article id."""
    dead_letter_topic: str = "newswatch.dead-letters"
    """Input that could not be processed or delivered, with the reason (kept 30 days)."""
    stories_topic: str = "newswatch.stories"
    """Compacted: the latest state of each story, keyed by story id."""
    story_alerts_topic: str = "newswatch.story-alerts"
    """One record per story alert (first escalation, then each material change)."""
    classified_topic: str = "newswatch.classified"
    """One partition: Taiwan-related articles with their classification, handed from the
    workers that classify to the one worker the group gives story clustering (kept 7 days)."""
    partitions: int = Field(3, ge=1)
    """Partitions of the articles topic (and upper bound on pipeline parallelism)."""
    replication_factor: int = 1
    """Replication factor of topics newswatch creates (3 on a production cluster)."""
    group_id: str = "newswatch-pipeline"
    """Consumer group of the pipeline: workers with the same group share the articles
    partitions; offsets are committed after outcomes are written."""
    session_timeout: float = 10.0
    """Seconds without a worker's heartbeat before the group gives its partitions to others."""
    handover_timeout: float = 15.0
    """Seconds a worker may take to finish a partition the group moves away from it."""


class BrokerSettings(_Section):
    """The embedded single-node KRaft broker."""

    data_dir: UserPath = Field(default_factory=lambda: _home() / "kafka")
    """Log directory of the embedded broker (its topics and committed offsets)."""
    port: int = 19092
    """Client port on 127.0.0.1 (below Linux's ephemeral range, so no client socket holds it)."""
    controller_port: int = 19093
    """KRaft controller port on 127.0.0.1."""
    heap: str = "512m"
    """Java heap of the broker (-Xmx)."""
    lib_dir: UserPath = PROJECT_ROOT / "deploy" / "kafka" / "lib"
    """The broker jars, fetched by deploy/setup.sh."""
    start_timeout: float = 120.0
    """Seconds to wait for the broker to serve requests."""


class ConnectorSettings(_Section):
    """Sources that feed the articles topic."""

    feeds: Strings = Field(default_factory=list)
    """Feed URLs, or files listing one URL per line."""
    files: Paths = Field(default_factory=list)
    """Directories of documents (.txt, .html, .json, .jsonl, .xml)."""
    poll_interval: float = Field(300.0, gt=0)
    """Seconds between polls of one feed."""
    watch_interval: float = 5.0
    """Seconds between scans of watched directories."""
    state_dir: UserPath = Field(default_factory=lambda: _home() / "state")
    """Connector checkpoints: validators, sent ids, feed health."""
    allow_private_addresses: bool = False
    """Allow feeds on loopback, private and link-local addresses (off: SSRF guard)."""
    allowed_networks: Strings = Field(default_factory=list)
    """CIDR blocks allowed even while private addresses are refused, e.g. an intranet feed host."""
    max_feed_bytes: int = 20 * 1024 * 1024
    """Larger feed bodies are refused (a feed-health error)."""
    max_entry_chars: int = 200_000
    """Longer entry texts are cut to this many characters (and logged)."""
    max_redirects: int = 5
    """Redirects followed per fetch."""
    connect_timeout: float = 10.0
    """Seconds to connect to a feed host."""
    read_timeout: float = 30.0
    """Seconds to wait for each read from a feed host."""
    fetch_deadline: float = 120.0
    """Seconds one whole fetch (redirects and body) may take; stops slow-drip servers."""
    max_backoff: float = 3600.0
    """Upper bound, in seconds, of the per-feed backoff after errors."""
    user_agent: str = "newswatch/0.1 (+https://github.com/newswatch/newswatch)"
    """User-Agent header of feed requests."""


class ModelSettings(_Section):
    """The classifier."""

    artifacts_dir: UserPath = PROJECT_ROOT / "models" / "artifacts"
    """Trained model versions, one directory each, and LATEST."""
    version: str = "latest"
    """Artefact version to load; 'latest' is the newest under artifacts_dir."""
    batch_size: int = Field(32, ge=1)
    """Articles per model batch."""
    max_batch_wait: float = 0.0
    """Seconds to buffer a batch across bundles; 0 batches within each bundle.

    The Kafka reader hands over up to 500 records per bundle, so per-bundle
    batching already fills batches under load and adds no latency when idle.
    """
    threads: int = 0
    """Inference threads; 0 lets ONNX Runtime decide."""
    prefilter: bool = True
    """Skip the model for articles that name neither Taiwan, China nor a coercive measure."""
    labelled_data: UserPath = PROJECT_ROOT.parent / "shared" / "data" / "labelled" / "dev.jsonl"
    """Labelled JSON-lines rows that `newswatch model eval` scores by default."""
    labelled_sources: Paths = Field(
        default_factory=lambda: [
            PROJECT_ROOT.parent / "shared" / "data" / "labelled",
            PROJECT_ROOT / "data" / "labelled",
        ]
    )
    """Labelled files or directories (every *.jsonl) that `model train` and `model eval
    --rolling` read; rows published from 2024 on are left out of training."""


class RunnerSettings(_Section):
    """The Beam runner that executes the pipeline."""

    runner: Literal["prism", "dask"] = "prism"
    """prism (the streaming pipeline, local) or dask (bounded replays only, on a Dask cluster)."""
    prism_location: UserPath = PROJECT_ROOT / ".tools" / "bin" / "prism"
    """The Prism runner binary, built by deploy/setup.sh."""
    dask_scheduler: str = ""
    """Dask scheduler address for runner dask (tcp://HOST:8786); empty: start a local cluster."""
    dask_workers: int = Field(2, ge=1)
    """Worker processes of the local Dask cluster (runner dask without a scheduler address)."""
    beam_args: Strings = Field(default_factory=list)
    """Extra Beam pipeline options passed through verbatim."""


class StorySettings(_Section):
    """Online story clustering: which articles join one story, and when it is breaking."""

    enabled: bool = True
    """Group Taiwan-related articles into stories and raise story alerts."""
    similarity: float = 0.13
    """Least time-decayed cosine similarity between an article and a story for it to join."""
    decay_days: float = 8.0
    """Time constant, in days, of the similarity's decay with the gap to a story's last article."""
    idle_days: float = 5.0
    """A story with no new article for this many days (event time) goes dormant and is evicted."""
    late_days: float = 2.0
    """Grace, in days, before an idle story is evicted, so articles that arrive late still join."""
    keywords: int = 80
    """Weighted terms kept per story to match new articles against."""
    index_terms: int = 20
    """Strongest terms of a story (and of an article) that find candidate stories."""
    title_weight: float = 3.0
    """Weight of a headline word against a word of the text."""
    text_chars: int = 300
    """Characters of an article's text that count towards matching (the lead)."""
    headline_link: float = 0.0
    """Weight of the closest member headline's similarity (0: match the story's keywords only)."""
    headline_members: int = 10
    """How many of a story's latest headlines `headline_link` compares with."""
    breaking_outlets: int = 4
    """A story is breaking when this many distinct outlets cover it within `breaking_hours`."""
    breaking_hours: float = 6.0
    """The window, in hours of event time, of the breaking rule."""
    outlet_steps: Ints = Field(default_factory=lambda: [3, 5, 10, 20, 50])
    """Numbers of outlets at which an escalated story raises an update."""
    max_evidence: int = 5
    """Evidence sentences kept per story."""


class WebhookSettings(_Section):
    """A route's HTTP sink: one POST per notification."""

    url: str = ""
    """http(s) URL the notification is POSTed to."""
    format: str = "json"
    """Body: 'json' (every story field) or 'slack' (a Slack/Mattermost {"text": ...} message)."""
    secret_env: str = ""
    """Environment variable holding the HMAC-SHA256 signing secret (X-Newswatch-Signature)."""
    secret_file: str = ""
    """File holding the signing secret (surrounding whitespace is ignored)."""
    timeout: float = 10.0
    """Seconds one request may take (connect and response)."""


class EmailSettings(_Section):
    """A route's SMTP sink: one multipart (plain text and HTML) message per notification."""

    host: str = ""
    """SMTP server host name."""
    port: int = 587
    """SMTP server port (587 submission with STARTTLS, 465 implicit TLS, 25 relay)."""
    security: str = "starttls"
    """'starttls' (upgrade the connection), 'tls' (TLS from the start) or 'none'."""
    ca_file: str = ""
    """PEM file of the certificate authorities to trust; empty: the system's."""
    username: str = ""
    """Log in as this user (with the password below); empty: no login."""
    password_env: str = ""
    """Environment variable holding the SMTP password."""
    password_file: str = ""
    """File holding the SMTP password (surrounding whitespace is ignored)."""
    sender: str = "newswatch@localhost"
    """From address."""
    to: Strings = Field(default_factory=list)
    """Recipient addresses."""
    subject_prefix: str = "[newswatch]"
    """Put before every subject line."""
    timeout: float = 30.0
    """Seconds one SMTP conversation may take."""


class CommandSettings(_Section):
    """A route's command sink: the notification JSON on the standard input of a program."""

    argv: Strings = Field(default_factory=list)
    """Program and arguments, run without a shell; exit 0 delivers, 75 retries, others fail."""
    timeout: float = 60.0
    """Seconds the program may run; longer runs are killed and retried."""


class FileSettings(_Section):
    """A route's file sink: one JSON line per notification, appended and synced."""

    path: str = ""
    """File to append to (created if missing)."""


class RouteSettings(_Section):
    """Which story alerts go to one sink, and how often.

    Exactly one sink is set: ``webhook.url``, ``email.host``, ``command.argv`` or
    ``file.path``. Timing follows Alertmanager, per story: see `notifiers.routes`.
    """

    name: str = ""
    """Name in logs and dead letters; defaults to the sink kind and the route's position."""
    min_severity: int = 0
    """Deliver only stories at least this severe (0-4)."""
    signals: Strings = Field(default_factory=list)
    """Deliver only stories carrying at least one of these signal types; empty: any."""
    group_wait: float = 30.0
    """Seconds the first alert of a story is held so that quick follow-ups fold into it."""
    group_interval: float = 300.0
    """Least seconds between two notifications of the same story."""
    repeat_interval: float = 4 * 3600.0
    """Seconds during which a story state identical to the one last sent is not sent again."""
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    """The HTTP sink."""
    email: EmailSettings = Field(default_factory=EmailSettings)
    """The SMTP sink."""
    command: CommandSettings = Field(default_factory=CommandSettings)
    """The command sink."""
    file: FileSettings = Field(default_factory=FileSettings)
    """The file sink."""


class NotifySettings(_Section):
    """Delivery of story alerts to people: routes and sinks."""

    routes: list[RouteSettings] = Field(default_factory=list)
    """Routes, as ``[[notify.routes]]`` tables of the config file."""
    webhook: str = ""
    """Also deliver to this webhook URL, on a route with default timing (signed with the
    secret in $NEWSWATCH_WEBHOOK_SECRET when that is set)."""
    follow: Strings = Field(default_factory=lambda: ["stories"])
    """Alerts to deliver: 'stories' (story alerts), 'articles' (article alerts), or both."""
    group_id: str = "newswatch-notify"
    """Consumer group of the notifier; offsets are committed after delivery or dead letter."""
    give_up_after: float = 3600.0
    """Seconds of failed attempts after which a notification becomes a dead letter."""
    max_backoff: float = 300.0
    """Longest wait, in seconds, between two attempts (unless Retry-After asks for longer)."""


class ServeSettings(_Section):
    """The web page and the metrics endpoint."""

    host: str = "127.0.0.1"
    """Address `newswatch serve` binds to; any non-loopback address needs credentials."""
    port: int = 8080
    """TCP port of the web page."""
    reports_dir: UserPath = Field(default_factory=lambda: _home() / "reports")
    """Backtest reports (`newswatch replay --report DIR` with DIR under it) listed on the page."""
    refresh: float = 5.0
    """Seconds between broker and lag checks, feed-health reads and live-stream keep-alives."""
    history_hours: float = 168.0
    """How far back the page reads the topics at start (and the span of the index chart)."""
    max_stories: int = 2000
    """Stories held in memory; the least recently updated are dropped first."""
    max_alerts: int = 1000
    """Article alerts held in memory, newest kept."""
    max_dead_letters: int = 500
    """Dead letters held in memory with their payload preview, newest kept (counts cover all)."""
    max_lag: int = 10_000
    """Readiness: the pipeline group may be at most this many articles behind."""
    metrics_port: int = 0
    """Port of the worker's /metrics, /healthz and /readyz (run, pipeline); 0 turns it off."""
    metrics_host: str = "127.0.0.1"
    """Address of the worker's metrics endpoint; non-loopback needs credentials as for serve."""
    token: str = Field(default="", repr=False)
    """Bearer token (or basic-auth password) required by the page: NEWSWATCH_SERVE_TOKEN only."""
    user: str = Field(default="", repr=False)
    """Basic-auth user name, with ``password``: NEWSWATCH_SERVE_USER."""
    password: str = Field(default="", repr=False)
    """Basic-auth password, with ``user``: NEWSWATCH_SERVE_PASSWORD."""


class Settings(BaseSettings):
    """All settings of one newswatch process.

    ``Settings()`` is the built-in defaults; `load_settings` layers the config
    file, the environment and the flags over them.
    """

    model_config = SettingsConfigDict(
        env_prefix="NEWSWATCH_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        enable_decoding=False,
        extra="forbid",
        validate_assignment=True,
        use_attribute_docstrings=True,
    )

    home: UserPath = Field(default_factory=_home)
    """State directory: the embedded broker's data, connector checkpoints, reports."""
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    """Broker address and topic names."""
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    """The embedded broker."""
    connectors: ConnectorSettings = Field(default_factory=ConnectorSettings)
    """Feeds and watched directories."""
    model: ModelSettings = Field(default_factory=ModelSettings)
    """The classifier."""
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    """The Beam runner."""
    stories: StorySettings = Field(default_factory=StorySettings)
    """Story clustering and story alerts."""
    notify: NotifySettings = Field(default_factory=NotifySettings)
    """Notification routes and sinks."""
    serve: ServeSettings = Field(default_factory=ServeSettings)
    """The web page and the metrics endpoint."""

    @property
    def embedded_broker(self) -> bool:
        """True when no external Kafka was configured."""
        return not self.kafka.bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        """The broker address clients should use."""
        return self.kafka.bootstrap_servers or f"127.0.0.1:{self.broker.port}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest priority first: keyword arguments, then what `load_settings` layers.
        return (init_settings, *_LAYERS.get())


#: The sources `load_settings` puts under the keyword arguments (flags, environment, file).
_LAYERS: ContextVar[tuple[PydanticBaseSettingsSource, ...]] = ContextVar("layers", default=())

#: Paths that follow ``home`` unless set themselves: (section, field, name under home).
_UNDER_HOME = (
    ("broker", "data_dir", "kafka"),
    ("connectors", "state_dir", "state"),
    ("serve", "reports_dir", "reports"),
)


class _Environment(EnvSettingsSource):
    """``NEWSWATCH_<SECTION>_<FIELD>`` variables of a mapping (the process's by default)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def settings_sections(cls: type[BaseModel] = Settings) -> Iterator[type[BaseModel]]:
    """Every settings model reachable from ``cls``: the sections and their tables."""
    for info in cls.model_fields.values():
        for kind in (info.annotation, *typing.get_args(info.annotation)):
            if isinstance(kind, type) and issubclass(kind, _Section):
                yield kind
                yield from settings_sections(kind)


def field_help(cls: type[BaseModel], name: str) -> str:
    """The first paragraph of a field's docstring, on one line."""
    doc = cls.model_fields[name].description or ""
    return " ".join(doc.split("\n\n")[0].split())


def env_name(section: str, name: str) -> str:
    """The environment variable of a settings field, e.g. ``NEWSWATCH_KAFKA_GROUP_ID``."""
    return f"NEWSWATCH_{section.upper()}_{name.upper()}"


def _config_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    for section, values in data.items():
        if (
            section == "home"
            or section not in Settings.model_fields
            or not isinstance(values, dict)
        ):
            raise ConfigError(f"{path}: unknown section [{section}]")
    return data


def _flags(args: argparse.Namespace | None) -> dict[str, dict[str, Any]]:
    flags: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args or argparse.Namespace()).items():
        if "__" in dest and value is not None:
            section, name = dest.split("__", 1)
            flags.setdefault(section, {})[name] = value
    return flags


def _problem(error: Mapping[str, Any]) -> str:
    """One validation error as a line: where, and what is wrong (never the value)."""
    loc = [str(part) for part in error["loc"]]
    if error["type"] == "extra_forbidden":
        where = ".".join(loc[:-1]) or "settings"
        return f"{where}: unknown option {loc[-1]!r}"
    message = error["msg"]
    if error["type"] == "value_error" and error.get("ctx", {}).get("error"):
        message = str(error["ctx"]["error"])
    message = message[:1].lower() + message[1:]
    if len(loc) == 2 and loc[0] in Settings.model_fields:
        section, name = loc
        flag = f"--{name.replace('_', '-')}"
        return f"{flag} (env {env_name(section, name)}, config [{section}] {name}): {message}"
    return f"{'.'.join(loc)}: {message}"


def load_settings(
    args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build `Settings` from defaults, config file, environment and parsed flags."""
    env = os.environ if env is None else env
    config_path = getattr(args, "config", None) or env.get("NEWSWATCH_CONFIG")
    file = _config_file(Path(config_path).expanduser()) if config_path else {}
    home = getattr(args, "home", None) or env.get("NEWSWATCH_HOME")
    init: dict[str, Any] = _flags(args)
    if home:
        home = Path(home).expanduser()
        init["home"] = home
        under = {section: {name: home / sub} for section, name, sub in _UNDER_HOME}
        layers = (InitSettingsSource(Settings, under),)
    else:
        layers = ()
    sources = (
        _Environment(Settings, env),
        InitSettingsSource(Settings, file),
        *layers,
    )
    token = _LAYERS.set(sources)
    try:
        return Settings(**init)
    except ValidationError as exc:
        raise ConfigError("; ".join(_problem(e) for e in exc.errors())) from None
    finally:
        _LAYERS.reset(token)


def replace(obj: BaseModel, **changes: Any) -> Any:
    """A copy of a settings section (or of `Settings`) with some fields changed."""
    return obj.model_copy(update=changes)
