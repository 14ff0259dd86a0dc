#!/usr/bin/env bash
# Set up everything the project needs on a fresh machine: the venv with pinned Python deps, and (for the
# interop tests and the Kannel comparison) the Debian packages of the independent peers.
# Idempotent and quick when nothing changed. Kafka and Zipkin jars are fetched by the code that starts them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.smsflow-deps-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python dependencies" >&2
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi
# Independent SMPP peers for the interop tests: Net::SMPP (Perl) and Kannel (for the benchmark comparison).
want=()
perl -MNet::SMPP -e1 2>/dev/null || want+=(libnet-smpp-perl)
command -v bearerbox >/dev/null 2>&1 || [ -x /usr/sbin/bearerbox ] || want+=(kannel)
if [ ${#want[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing Debian packages: ${want[*]}" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}") >&2 \
      || echo "bootstrap: WARNING could not install ${want[*]}" >&2
  else
    echo "bootstrap: WARNING missing ${want[*]} (run as root or install them to run the interop tests)" >&2
  fi
fi
