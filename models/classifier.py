"""Serving: a trained artefact as an article classifier (ONNX Runtime + tokenizers, no torch).

Load by version and classify batches of articles::

    from models.classifier import EscalationClassifier
    from newswatch.config import ModelSettings

    classifier = EscalationClassifier.load(ModelSettings())  # version "latest"
    for result in classifier.classify(articles):
        print(result.escalation, result.signals, result.evidence)

Each article is cut into sentence windows (`models.text`), all windows of a
batch are scored together in length-sorted sub-batches, and the article takes
the maximum over its windows. Evidence sentences are scored in a second, small
pass for the articles that escalate. Articles that name neither Taiwan nor China
skip the network (`models.labels.could_be_taiwan_related`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from models.features import lexical_features, n_lexical
from models.labels import (
    DEFAULT_THRESHOLDS,
    MODEL_NAME,
    OUTPUT_SLICES,
    SIGNALS,
    could_be_taiwan_related,
    severity_from_signals,
)
from models.text import MAX_WINDOW_CHARS, Window, join_title, split_sentences, windows
from newswatch.config import ModelSettings
from newswatch.errors import ModelNotFound
from newswatch.schemas import Article, Classification

__all__ = [
    "LATEST_FILE",
    "MAX_TOKENS",
    "EscalationClassifier",
    "ModelInputs",
    "Scores",
    "decide",
    "document_inputs",
    "escalation_logit",
    "load_tokenizer",
    "probabilities",
    "resolve_artifact",
]

logger = logging.getLogger(__name__)

#: Name of the pointer file, under the artefacts directory, holding the newest version.
LATEST_FILE = "LATEST"
#: Model inputs are cut to this many tokens (a window plus its headline fits).
MAX_TOKENS = 160
#: Padded tokens per ONNX Runtime call (rows x longest input), see `logits_from_ids`.
TOKENS_PER_RUN = 1024
#: At most this many evidence sentences per article.
MAX_EVIDENCE = 5

_TRAIN_HINT = "train one with `newswatch model train` (or run deploy/setup.sh)"


def resolve_artifact(artifacts_dir: Path, version: str = "latest") -> Path:
    """The directory of an artefact version; 'latest' follows the LATEST pointer.

    Raises:
        ModelNotFound: no such version, or nothing trained yet.
    """
    artifacts_dir = Path(artifacts_dir)
    if version == "latest":
        pointer = artifacts_dir / LATEST_FILE
        try:
            version = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ModelNotFound(
                f"no trained model in {artifacts_dir} (no {LATEST_FILE} file): {_TRAIN_HINT}"
            ) from None
    directory = artifacts_dir / version
    if not (directory / "meta.json").is_file():
        found = sorted(p.parent.name for p in artifacts_dir.glob("*/meta.json"))
        have = f"; available: {', '.join(found)}" if found else ""
        raise ModelNotFound(
            f"model version {version!r} not found in {artifacts_dir}{have}: {_TRAIN_HINT}"
        )
    return directory


def load_tokenizer(path: Path, max_tokens: int = MAX_TOKENS) -> Tokenizer:
    """The artefact's WordPiece tokenizer, truncating and never padding."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))


def escalation_logit(logits: np.ndarray) -> np.ndarray:
    """Escalation evidence of raw network outputs ``[n, N_OUTPUTS]``, as logits ``[n]``.

    The guide defines escalation as taiwan_related and at least one signal, so
    the score is the geometric mean of P(escalation), P(taiwan_related) and the
    likeliest signal's probability (out-of-fold F1 on the training rows: 0.783,
    against 0.780 for the escalation head alone). Calibrated afterwards.
    """

    def part(name: str) -> np.ndarray:
        begin, end = OUTPUT_SLICES[name]
        return _sigmoid(logits[:, begin:end])

    p = part("escalation")[:, 0] * part("taiwan_related")[:, 0] * part("signals").max(axis=1)
    p = np.clip(np.cbrt(p), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _padded(ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids right-padded to the longest, and the attention mask."""
    width = max((len(i) for i in ids), default=0)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, tokens in enumerate(ids):
        input_ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return input_ids, mask


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(slots=True)
class Scores:
    """Probabilities of a set of model inputs, one row per input."""

    taiwan: np.ndarray
    escalation: np.ndarray
    signals: np.ndarray
    severity: np.ndarray


def probabilities(
    logits: np.ndarray, calibration: Sequence[float] = (1.0, 0.0), *, combined: bool = True
) -> Scores:
    """Probabilities of raw network outputs ``[n, N_OUTPUTS]``; escalation calibrated.

    ``combined`` scores escalation with `escalation_logit` (artefacts before that
    rule used the escalation head alone).
    """
    scale, shift = calibration

    def part(name: str) -> np.ndarray:
        begin, end = OUTPUT_SLICES[name]
        return logits[:, begin:end]

    evidence = escalation_logit(logits) if combined else part("escalation")[:, 0]
    return Scores(
        taiwan=_sigmoid(part("taiwan_related")[:, 0]),
        escalation=_sigmoid(float(scale) * evidence + float(shift)),
        signals=_sigmoid(part("signals")),
        severity=_softmax(part("severity")),
    )


def decide(scores: Scores, rows: slice, thresholds: Mapping[str, float]) -> dict[str, Any]:
    """The decision fields of one document from the scores of its inputs ``rows``.

    A document takes the maximum over its windows; this one function decides
    for serving and for evaluation on cached features alike.
    """
    t = thresholds
    taiwan_score = float(scores.taiwan[rows].max())
    escalation_score = float(scores.escalation[rows].max())
    signal_matrix = scores.signals[rows]
    signal_scores = {name: float(signal_matrix[:, i].max()) for i, name in enumerate(SIGNALS)}
    escalation = escalation_score >= t["escalation"]
    signals: list[str] = []
    severity = 0
    if escalation:
        signals = [name for name in SIGNALS if signal_scores[name] >= t[name]]
        if not signals:
            # The guide's escalation implies a signal: report the likeliest one.
            signals = [max(SIGNALS, key=signal_scores.__getitem__)]
        severity = severity_from_signals(signals)
        if "military" in signals:
            window = int(signal_matrix[:, SIGNALS.index("military")].argmax())
            probs = scores.severity[rows][window]
            if probs[3] + probs[4] >= 0.5:
                severity = max(severity, 4 if probs[4] > probs[3] else 3)
    return {
        "taiwan_related": escalation or taiwan_score >= t["taiwan_related"],
        "taiwan_score": round(taiwan_score, 4),
        "escalation": escalation,
        "escalation_score": round(escalation_score, 4),
        "signals": signals,
        "signal_scores": {k: round(v, 4) for k, v in signal_scores.items()},
        "severity": severity,
    }


@dataclass(slots=True)
class ModelInputs:
    """A document laid out as model inputs: one text, headline and lexical row per window."""

    title: str
    sentences: list[str]
    windows: list[Window]
    texts: list[str]
    lexical: list[np.ndarray]
    headlines: list[str]
    """The headline view of each input (the headline; the text itself when there is none)."""


def document_inputs(title: str, text: str, lexical: str = "v2") -> ModelInputs:
    """Sentence windows of a document, each joined to the headline, with lexical features.

    Training builds its inputs from labelled rows with this same function;
    ``lexical`` names the artefact's lexical feature set (`models.features`).
    """
    title = title.strip()
    sentences = split_sentences(text)
    if not title and len(sentences) > 1 and len(" ".join(sentences)) > MAX_WINDOW_CHARS:
        # A long text without a headline: its lead sentence gives every window the
        # article's topic (a window about "the remarks" needs to know whose, on what).
        title, sentences = sentences[0], sentences[1:]
    spans = windows(sentences) or [Window(0, 0, "")]
    texts = [join_title(title, w.text) for w in spans]
    return ModelInputs(
        title=title,
        sentences=sentences,
        windows=spans,
        texts=texts,
        lexical=[lexical_features(title, sentences[w.start : w.end], lexical) for w in spans],
        headlines=[title or t for t in texts],
    )


@dataclass(slots=True)
class _Doc:
    """An article's inputs and where they sit in the batch."""

    inputs: ModelInputs
    rows: slice

    @property
    def title(self) -> str:
        return self.inputs.title

    @property
    def sentences(self) -> list[str]:
        return self.inputs.sentences

    @property
    def windows(self) -> list[Window]:
        return self.inputs.windows


class EscalationClassifier:
    """Classifies articles for Taiwan-related escalation signals with a trained artefact."""

    def __init__(
        self, directory: Path, *, batch_size: int = 32, threads: int = 0, prefilter: bool = True
    ) -> None:
        self.directory = Path(directory)
        self.meta: dict[str, Any] = json.loads(
            (self.directory / "meta.json").read_text(encoding="utf-8")
        )
        onnx_path = self.directory / self.meta.get("onnx", "model.onnx")
        if not onnx_path.is_file():
            raise ModelNotFound(f"{onnx_path} is missing: {_TRAIN_HINT}")
        self.batch_size = max(1, batch_size)
        self.prefilter = prefilter
        self.max_tokens = int(self.meta.get("max_tokens", MAX_TOKENS))
        self.tokenizer = load_tokenizer(self.directory / "tokenizer.json", self.max_tokens)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Busy-waiting worker threads steal the cores that Beam, Kafka and the
        # connectors share with the model; block instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self.lexical = str(self.meta.get("lexical", "v2"))
        self.headline_view = bool(self.meta.get("headline_view", False))
        self.thresholds: dict[str, float] = {
            **DEFAULT_THRESHOLDS,
            **self.meta.get("thresholds", {}),
        }
        scale, shift = self.meta.get("calibration", {}).get("escalation", (1.0, 0.0))
        self._calibration = (float(scale), float(shift))

    @classmethod
    def load(cls, settings: ModelSettings) -> EscalationClassifier:
        """Load the artefact that ``settings.version`` names under ``settings.artifacts_dir``."""
        directory = resolve_artifact(settings.artifacts_dir, settings.version)
        classifier = cls(
            directory,
            batch_size=settings.batch_size,
            threads=settings.threads,
            prefilter=getattr(settings, "prefilter", True),
        )
        logger.info(
            "loaded model %s version %s from %s", classifier.name, classifier.version, directory
        )
        return classifier

    @property
    def name(self) -> str:
        """Model name, as reported in every `Classification`."""
        return str(self.meta.get("model", MODEL_NAME))

    @property
    def version(self) -> str:
        """Artefact version, as reported in every `Classification`."""
        return str(self.meta["version"])

    # -- scoring -----------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (truncated, unpadded)."""
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]

    def logits(
        self,
        texts: Sequence[str],
        lexical: Sequence[np.ndarray],
        headlines: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Raw network outputs ``[len(texts), N_OUTPUTS]``, batched by token length.

        ``headlines`` (one per text) feed the headline view of artefacts that have one.
        """
        title_ids = None
        if self.headline_view:
            title_ids = self.encode(headlines if headlines is not None else texts)
        return self.logits_from_ids(
            self.encode(texts), np.asarray(lexical, dtype=np.float32), title_ids
        )

    def feed(
        self,
        ids: Sequence[Sequence[int]],
        lexical: np.ndarray,
        title_ids: Sequence[Sequence[int]] | None = None,
    ) -> dict[str, np.ndarray]:
        """The ONNX inputs of one batch: padded ids and masks, lexical features."""
        out = dict(zip(("input_ids", "attention_mask"), _padded(ids), strict=True))
        out["lexical"] = np.asarray(lexical, dtype=np.float32)
        if self.headline_view:
            if title_ids is None:
                raise ValueError(f"model {self.version} also needs each input's headline")
            out.update(zip(("title_ids", "title_mask"), _padded(title_ids), strict=True))
        return out

    def logits_from_ids(
        self,
        ids: Sequence[Sequence[int]],
        lexical: np.ndarray,
        title_ids: Sequence[Sequence[int]] | None = None,
    ) -> np.ndarray:
        """Raw network outputs for pre-tokenised inputs (and headlines) and lexical features."""
        lexical = np.asarray(lexical, dtype=np.float32).reshape(len(ids), n_lexical(self.lexical))
        out = np.zeros((len(ids), OUTPUT_SLICES["severity"][1]), dtype=np.float32)
        # Sorting by length keeps padding, and so wasted work, small; a token
        # budget keeps each run small (on 2 cores, ~8 inputs of ~100 tokens per
        # run measured faster than 32 or 128, see bench/model_throughput).
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        begin = 0
        while begin < len(order):
            rows = 1
            while (
                begin + rows < len(order)
                and rows < self.batch_size
                and (rows + 1) * len(ids[order[begin + rows]]) <= TOKENS_PER_RUN
            ):
                rows += 1
            chunk = order[begin : begin + rows]
            begin += rows
            titles = [title_ids[i] for i in chunk] if title_ids is not None else None
            (result,) = self.session.run(
                ["logits"], self.feed([ids[i] for i in chunk], lexical[chunk], titles)
            )
            out[chunk] = result
        return out

    def scores(self, logits: np.ndarray) -> Scores:
        """Probabilities from raw outputs; escalation calibrated."""
        return probabilities(
            logits, self._calibration, combined=self.meta.get("escalation_rule") == "combined"
        )

    # -- articles ----------------------------------------------------------------

    def classify(self, articles: Sequence[Article]) -> list[Classification]:
        """One `Classification` per article, in order."""
        docs: list[_Doc | None] = []
        texts: list[str] = []
        lexical: list[np.ndarray] = []
        headlines: list[str] = []
        for article in articles:
            if self.prefilter and not could_be_taiwan_related(f"{article.title}\n{article.text}"):
                docs.append(None)
                continue
            inputs = document_inputs(article.title, article.text, self.lexical)
            start = len(texts)
            texts.extend(inputs.texts)
            lexical.extend(inputs.lexical)
            headlines.extend(inputs.headlines)
            docs.append(_Doc(inputs, slice(start, len(texts))))

        scores = self.scores(self.logits(texts, lexical, headlines)) if texts else None
        decided = [self._decide(doc, scores) if doc else None for doc in docs]
        evidence = self._evidence(docs, decided, scores)
        return [
            self._negative() if fields is None else Classification(**fields, evidence=found)
            for fields, found in zip(decided, evidence, strict=True)
        ]

    def _negative(self) -> Classification:
        """The result for an article the pre-filter ruled out (or with no text at all)."""
        return Classification(
            taiwan_related=False,
            taiwan_score=0.0,
            escalation=False,
            escalation_score=0.0,
            signals=[],
            signal_scores=dict.fromkeys(SIGNALS, 0.0),
            severity=0,
            evidence=[],
            model=self.name,
            model_version=self.version,
        )

    def _decide(self, doc: _Doc, scores: Scores | None) -> dict[str, Any] | None:
        """Article-level decision from its windows' scores (max over windows)."""
        if scores is None or (not doc.title and not doc.sentences):
            return None
        fields = decide(scores, doc.rows, self.thresholds)
        fields.update(model=self.name, model_version=self.version)
        return fields

    def _evidence(
        self,
        docs: list[_Doc | None],
        decided: list[dict[str, Any] | None],
        scores: Scores | None,
    ) -> list[list[str]]:
        """The decisive sentences of each escalating article, most decisive first.

        Candidates are the headline and the sentences of the windows that score
        highest for escalation and for each reported signal; each is scored on
        its own after the headline (one small extra batch, only for articles
        that escalate). The best candidate per reported signal is kept
        (strongest signal first), then the best one for escalation.
        """
        found: list[list[str]] = [[] for _ in docs]
        plans: list[tuple[int, list[str], int]] = []
        inputs: list[str] = []
        lexical: list[np.ndarray] = []
        headlines: list[str] = []
        for index, (doc, fields) in enumerate(zip(docs, decided, strict=True)):
            if doc is None or fields is None or not fields["escalation"] or scores is None:
                continue
            rows = doc.rows
            best_windows = {int(scores.escalation[rows].argmax())}
            for name in fields["signals"]:
                best_windows.add(int(scores.signals[rows][:, SIGNALS.index(name)].argmax()))
            candidates = [doc.title] if doc.title else []
            for w in sorted(best_windows):
                span = doc.windows[w]
                candidates.extend(doc.sentences[span.start : span.end])
            candidates = list(dict.fromkeys(c for c in candidates if c))
            start = len(inputs)
            for c in candidates:
                inputs.append(join_title(doc.title, c) if c != doc.title else c)
                headlines.append(doc.title or c)
                units = [c] if c != doc.title else []
                lexical.append(lexical_features(doc.title, units, self.lexical))
            plans.append((index, candidates, start))
        if not inputs:
            return found
        scored = self.scores(self.logits(inputs, lexical, headlines))
        for index, candidates, start in plans:
            fields = decided[index]
            assert fields is not None
            rows = slice(start, start + len(candidates))
            evidence: list[str] = []
            for name in sorted(fields["signals"], key=lambda s: -fields["signal_scores"][s]):
                column = scored.signals[rows][:, SIGNALS.index(name)]
                evidence.append(candidates[int(column.argmax())])
            evidence.append(candidates[int(scored.escalation[rows].argmax())])
            found[index] = list(dict.fromkeys(evidence))[:MAX_EVIDENCE]
        return found
