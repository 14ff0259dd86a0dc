# smsflow processes (connector, worker, api, registry). Not built in CI here (no Docker engine).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY smsflow smsflow
COPY connectors connectors
COPY devkit devkit
COPY streams streams
COPY schemas schemas
COPY infra infra
COPY config config
RUN pip install --no-cache-dir -e .  # editable: schemas/ and infra/ are read from the source tree
USER nobody
