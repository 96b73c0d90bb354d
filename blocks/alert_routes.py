"""Where alerts go, by channel: Apprise URLs kept as Secrets (they carry tokens and passwords)."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr


class AlertRoutes(Block):
    """Apprise URLs per channel; urgency picks the channels: critical → SMS + IM, warning → IM + email,
    info → email."""

    _block_type_name = "gpuflows Alert Routes"
    _block_type_slug = "gpuflows-alert-routes"
    _description = "Apprise URLs for SMS, instant messages and email; urgency decides which are used."
    model_config = ConfigDict(hide_input_in_errors=True)  # the URLs carry tokens

    sms: list[SecretStr] = Field(default_factory=list, description="e.g. twilio://…, sns://…")
    im: list[SecretStr] = Field(default_factory=list, description="e.g. slack://…, matrix://…, tgram://…")
    email: list[SecretStr] = Field(
        default_factory=list,
        description="e.g. mailtos://user:pass@smtp.host?to=…",  # pragma: allowlist secret
    )

    def channels(self) -> dict[str, list[str]]:
        return {
            name: [url.get_secret_value() for url in getattr(self, name)] for name in ("sms", "im", "email")
        }
