"""A small client of the subscriptions REST API, for ``smsflow subscriptions …``.

The API key comes from an environment variable (never from a command-line argument, which other users of the
machine could see in the process list).
"""

from __future__ import annotations

import os
from typing import Any

import requests


class ApiCallError(RuntimeError):
    """The API answered with an error, or could not be reached; the message says which."""


class SubscriptionsClient:
    def __init__(self, base_url: str, token: str, timeout_s: float = 30.0) -> None:
        self.base = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._session.trust_env = False  # talk to the URL given, not through a proxy from the environment
        self._session.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def from_env(cls, base_url: str, key_env: str, timeout_s: float = 30.0) -> SubscriptionsClient:
        token = os.environ.get(key_env)
        if not token:
            raise ApiCallError(f"environment variable {key_env} (the API key) is not set")
        return cls(base_url, token, timeout_s)

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        timeout_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        try:
            resp = self._session.request(
                method,
                self.base + path,
                json=body,
                params=params,
                headers=headers,
                timeout=timeout_s or self.timeout_s,
            )
        except requests.RequestException as exc:
            raise ApiCallError(f"{method} {self.base}{path}: {exc}") from None
        if resp.status_code == 204:
            return None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code >= 400:
            err = (data or {}).get("error", {}) if isinstance(data, dict) else {}
            raise ApiCallError(
                f"HTTP {resp.status_code} {err.get('code', '')}: {err.get('message', resp.text)}"
            )
        return data

    def list(self, owner: str | None = None) -> Any:
        return self.call("GET", "/v1/subscriptions", params={"owner": owner} if owner else None)

    def get(self, sub_id: str) -> Any:
        return self.call("GET", f"/v1/subscriptions/{sub_id}")

    def create(self, body: dict[str, Any]) -> Any:
        return self.call("POST", "/v1/subscriptions", body)

    def update(self, sub_id: str, changes: dict[str, Any]) -> Any:
        return self.call("PATCH", f"/v1/subscriptions/{sub_id}", changes)

    def delete(self, sub_id: str) -> None:
        self.call("DELETE", f"/v1/subscriptions/{sub_id}")

    def rotate_secret(self, sub_id: str, overlap_s: float | None = None, endpoint: str | None = None) -> Any:
        body: dict[str, Any] = {} if overlap_s is None else {"overlap_seconds": overlap_s}
        if endpoint is not None:
            body["endpoint"] = endpoint
        return self.call("POST", f"/v1/subscriptions/{sub_id}/rotate-secret", body)

    def enable(self, sub_id: str) -> Any:
        return self.call("POST", f"/v1/subscriptions/{sub_id}/enable", {})

    def disable(self, sub_id: str, reason: str | None = None) -> Any:
        return self.call("POST", f"/v1/subscriptions/{sub_id}/disable", {"reason": reason} if reason else {})

    def resend(self, message_id: str, sub_id: str) -> Any:
        return self.call(
            "POST", f"/v1/messages/{message_id}/resend", params={"subscription_id": sub_id}, timeout_s=600
        )

    def holdings(self) -> Any:
        return self.call("GET", "/v1/holdings")

    def holding(self, owner: str) -> Any:
        return self.call("GET", f"/v1/holdings/{owner}")

    def set_holding(self, owner: str, body: dict[str, Any]) -> Any:
        return self.call("PUT", f"/v1/holdings/{owner}", body)

    def delete_holding(self, owner: str) -> None:
        self.call("DELETE", f"/v1/holdings/{owner}")

    def recover(self, sub_id: str, since: str) -> Any:
        return self.call("POST", f"/v1/subscriptions/{sub_id}/recover", {"since": since}, timeout_s=3600)

    def send_message(self, body: dict[str, Any], idempotency_key: str | None = None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.call("POST", "/v1/messages", body, headers=headers)

    def message(self, message_id: str) -> Any:
        return self.call("GET", f"/v1/messages/{message_id}")
