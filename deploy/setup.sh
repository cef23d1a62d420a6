#!/usr/bin/env bash
# Installs everything newswatch needs on a fresh machine, idempotently:
#   1. a Python 3.11 virtualenv in .venv with newswatch (editable) and its deps (PyPI);
#   2. the Kafka broker jars in deploy/kafka/lib (Maven Central, via mvn);
#   3. the Prism Beam runner in .tools/bin/prism (built from the Go module proxy);
#   4. Debian's chromium and chromedriver, for the headless tests of the report and web page;
#   5. the classifier artefact in models/artifacts (trained here, offline, on the CPU).
# Each step is skipped when its inputs did not change (stamp files), so re-runs take
# seconds; downloads go through pip's, Maven's and Go's own caches.
#
# Environment: PYTHON (default python3.11, else python3), NEWSWATCH_SKIP_TRAIN=1 to skip 5.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# Keep in step with apache-beam in pyproject.toml: runner and SDK must match.
BEAM_VERSION=2.77.0

say() { printf '[setup] %s\n' "$*" >&2; }
elapsed() { printf '%ss' "$(( $(date +%s) - $1 ))"; }
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

mkdir -p .tools

# 1. Python environment ---------------------------------------------------------------
python=${PYTHON:-}
if [ -z "$python" ]; then
  if command -v python3.11 >/dev/null; then python=python3.11; else python=python3; fi
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  say "error: newswatch needs Python 3.11; $python is $("$python" -V 2>&1). Set PYTHON=..."
  exit 2
fi
t=$(date +%s)
want=$(hash_of pyproject.toml)
if ! stamp_ok .venv/.stamp "$want" || ! .venv/bin/python -c 'import newswatch' 2>/dev/null; then
  say "installing Python packages into .venv (first run downloads PyTorch for training: a few GB)"
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet --progress-bar off -e ".[train,dev]"
  echo "$want" > .venv/.stamp
  say "Python packages ready ($(elapsed "$t"))"
else
  say "Python packages up to date"
fi

# 2. Kafka broker jars -------------------------------------------------------------------
t=$(date +%s)
want=$(hash_of deploy/kafka/pom.xml)
if ! stamp_ok deploy/kafka/lib/.stamp "$want"; then
  command -v mvn >/dev/null || { say "error: mvn (Apache Maven) is required for the Kafka jars"; exit 2; }
  command -v java >/dev/null || { say "error: java 17+ is required for the Kafka broker"; exit 2; }
  say "fetching Kafka broker jars from Maven Central"
  rm -rf deploy/kafka/lib
  if ! mvn -B -q -f deploy/kafka/pom.xml dependency:copy-dependencies > .tools/mvn.log 2>&1; then
    cat .tools/mvn.log >&2
    say "error: mvn could not fetch the Kafka jars (log above)"
    exit 2
  fi
  echo "$want" > deploy/kafka/lib/.stamp
  say "Kafka jars ready: $(ls deploy/kafka/lib/*.jar | wc -l) jars ($(elapsed "$t"))"
else
  say "Kafka jars up to date"
fi

# 3. Prism runner ---------------------------------------------------------------------
t=$(date +%s)
if ! stamp_ok .tools/bin/.prism-version "$BEAM_VERSION" || [ ! -x .tools/bin/prism ]; then
  command -v go >/dev/null || { say "error: go is required to build the Prism runner"; exit 2; }
  say "building the Prism runner v$BEAM_VERSION from the Go module proxy"
  GOBIN="$root/.tools/bin" go install "github.com/apache/beam/sdks/v2/go/cmd/prism@v$BEAM_VERSION"
  echo "$BEAM_VERSION" > .tools/bin/.prism-version
  say "Prism ready ($(elapsed "$t"))"
else
  say "Prism up to date"
fi

# 4. Headless Chromium (Debian packages): the report's rendering test, and the web page's
#    browser test (Selenium drives it through chromedriver) --------------------------
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  t=$(date +%s)
  say "installing Debian's chromium and chromium-driver (for the headless browser tests)"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo_ apt-get install -y -q chromium chromium-driver > .tools/apt.log 2>&1; then
    $sudo_ apt-get update -q >> .tools/apt.log 2>&1
    $sudo_ apt-get install -y -q chromium chromium-driver >> .tools/apt.log 2>&1 \
      || { cat .tools/apt.log >&2; say "error: could not install chromium"; exit 2; }
  fi
  say "chromium ready ($(elapsed "$t"))"
fi

# 5. Classifier -----------------------------------------------------------------------
# Retrained when the training code or the labelled data change: every *.jsonl under
# ../shared/data/labelled and data/labelled (rows published from 2024 on are left
# out). C is chosen on rolling-origin folds; encoder features are cached by content
# hash under models/artifacts/.cache, so a retrain after new labels encodes only the
# new rows. The artefact is versioned by its data hash; the pipeline loads LATEST.
t=$(date +%s)
if [ "${NEWSWATCH_SKIP_TRAIN:-0}" != 1 ]; then
  data=../shared/data/labelled/dev.jsonl
  [ -f "$data" ] || { say "error: labelled data not found at $data (../shared beside the checkout)"; exit 2; }
  want=$(hash_of models/*.py ../shared/data/labelled/*.jsonl $(ls data/labelled/*.jsonl 2>/dev/null))
  if stamp_ok models/artifacts/.stamp "$want" && [ -f models/artifacts/LATEST ]; then
    say "classifier artefact up to date ($(cat models/artifacts/LATEST))"
  else
    say "training the classifier on the CPU (a few minutes)"
    .venv/bin/newswatch model train
    echo "$want" > models/artifacts/.stamp
    say "classifier ready: $(cat models/artifacts/LATEST) ($(elapsed "$t"))"
  fi
fi
say "done"
