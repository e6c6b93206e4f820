"""Simulator settings (env prefix `SIMULATOR_`); `pinwheel-connector simulate` flags override some of them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from simulator.retry import RetryPolicy
from simulator.traffic import DEFAULT_VERSION, DEFAULT_WEBHOOK_ID, TrafficConfig


class SimulatorSettings(BaseSettings):
    """Pinwheel-like webhook traffic against a gateway (env prefix `SIMULATOR_`)."""

    model_config = SettingsConfigDict(env_prefix="SIMULATOR_", extra="ignore")

    url: str = Field(
        default="https://127.0.0.1:8443/webhooks/pinwheel", description="Webhook endpoint of the gateway (https)."
    )
    secret: SecretStr | None = Field(
        default=None,
        description="API secret used to sign deliveries (x-pinwheel-signature v2); never logged or written.",
        repr=False,
    )
    ca_file: Path | None = Field(
        default=Path("var/tls/gateway.crt"),
        description="PEM certificate(s) trusted for the gateway's TLS (its self-signed certificate); empty: the "
        "system trust store.",
    )
    accounts: int = Field(default=300, ge=0, description="Number of payroll accounts to simulate.")
    seed: int = Field(default=1, description="Random seed: the same seed gives the same events and bodies.")
    spread_s: float = Field(default=40.0, ge=0, description="Accounts connect uniformly over this many seconds.")
    pending_rate: float = Field(default=0.15, ge=0, le=1, description="Share of jobs that go pending first.")
    unresolved_rate: float = Field(
        default=0.2, ge=0, le=1, description="Share of pending jobs never resolved (they time out downstream)."
    )
    error_rate: float = Field(default=0.08, ge=0, le=1, description="Share of final job outcomes that are errors.")
    duplicate_rate: float = Field(
        default=0.05, ge=0, le=1, description="Share of events delivered more than once (at-least-once delivery)."
    )
    reorder_s: float = Field(
        default=1.0, ge=0, description="Random extra delay (0..this) per delivery: out-of-order arrival."
    )
    resolve_min_s: float = Field(default=2.5, gt=0, description="Shortest time from pending to final outcome.")
    resolve_max_s: float = Field(default=10.0, gt=0, description="Longest time from pending to final outcome.")
    no_account_rate: float = Field(
        default=0.02, ge=0, le=1, description="Events without account_id (company_connect.*) per account."
    )
    include_capture: bool = Field(
        default=True, description="Also send the 12 real sandbox deliveries (byte-exact, re-signed)."
    )
    rate: float = Field(default=500.0, ge=0, description="Most delivery attempts per second (0: unlimited).")
    concurrency: int = Field(default=32, ge=1, description="Most requests in flight at once.")
    timeout_s: float = Field(default=15.0, gt=0, description="Per-request timeout (Pinwheel waits 15 s).")
    max_retries: int = Field(default=5, ge=0, description="Attempts after the first on a 5xx or network failure.")
    base_delay_s: float = Field(default=28.0, gt=0, description="First retry delay before jitter (doubles each time).")
    retry_window_s: float = Field(default=900.0, gt=0, description="Retries stop this long after the first attempt.")
    time_scale: float = Field(
        default=1.0, gt=0, description="Multiplies the retry delays and window (0.01: 15 minutes become 9 s)."
    )
    webhook_id: str = Field(default=DEFAULT_WEBHOOK_ID, description="x-pinwheel-webhook-id sent with every event.")
    pinwheel_version: str = Field(default=DEFAULT_VERSION, description="Pinwheel-Version header.")
    ledger: Path = Field(
        default=Path("var/simulator/ledger.jsonl"), description="Where the JSON-lines ledger of the run is written."
    )
    progress: bool = Field(default=True, description="Draw a progress bar on stderr.")

    def traffic(self) -> TrafficConfig:
        return TrafficConfig(
            accounts=self.accounts,
            seed=self.seed,
            spread_s=self.spread_s,
            pending_rate=self.pending_rate,
            unresolved_rate=self.unresolved_rate,
            error_rate=self.error_rate,
            duplicate_rate=self.duplicate_rate,
            reorder_s=self.reorder_s,
            resolve_min_s=self.resolve_min_s,
            resolve_max_s=self.resolve_max_s,
            no_account_rate=self.no_account_rate,
            include_capture=self.include_capture,
            webhook_id=self.webhook_id,
            pinwheel_version=self.pinwheel_version,
        )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_retries=self.max_retries,
            base_delay_s=self.base_delay_s,
            window_s=self.retry_window_s,
            time_scale=self.time_scale,
        )
