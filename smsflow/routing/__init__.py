"""The double list: per-route health and the per-scope primary/secondary decision (docs/double-list.md).

Every module here is pure: no Kafka, no asyncio, no wall clock. Time is always an argument (epoch
milliseconds), so the Faust stage that feeds these classes is a thin shell, and re-running it over the same
health topic gives the same decisions by construction.

- ``model``: routes, scopes, policies, thresholds, overrides and the ``routing`` config section.
- ``health``: health states, health records, and scoring figures against thresholds.
- ``observations``: the facts the health aggregator is fed (binds, enquire_link, probes, webhook attempts).
- ``aggregator``: the hopping-window aggregation of observations into health records.
- ``decisions``: the per-scope state machine that turns health records and overrides into decisions.
"""
