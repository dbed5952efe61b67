"""The [hub] keys of the park config."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, HubSection, ParkConfig
from tests.ws.parks import hub_park_toml


def config_with(tmp_path: Path, hub_keys: str) -> ParkConfig:
    return ParkConfig.from_toml_text(hub_park_toml(tmp_path / "park", hub_keys=hub_keys),
                                     "park.toml")


def test_defaults_and_values(tmp_path: Path) -> None:
    default = config_with(tmp_path, "").hub
    assert (default.max_frame_bytes, default.meter_rate_hz, default.stall_timeout_s,
            default.session_ttl_ms, default.max_clients, default.tls_cert) == (
        65_536, 10.0, 5.0, 12 * 3_600_000, 5_000, None)
    assert default == HubSection(listen=default.listen)
    hub = config_with(tmp_path, 'max_frame_bytes = 4096\nmeter_rate_hz = 2.5\n'
                                'stall_timeout = "750ms"\nsession_ttl = "30m"\n'
                                'max_clients = 10\ntls_cert = "c.pem"\ntls_key = "k.pem"').hub
    assert (hub.max_frame_bytes, hub.meter_rate_hz, hub.stall_timeout_s, hub.session_ttl_ms,
            hub.max_clients) == (4096, 2.5, 0.75, 1_800_000, 10)
    assert hub.tls_cert is not None and hub.tls_cert.name == "c.pem"
    assert hub.tls_key is not None and hub.tls_key.name == "k.pem"


@pytest.mark.parametrize(("keys", "words"), [
    ("meter_rate_hz = 0", "hub.meter_rate_hz: must be between 0.1 and 100"),
    ("max_frame_bytes = 10", "hub.max_frame_bytes: must be between 1024"),
    ('stall_timeout = "soon"', "hub.stall_timeout:"),
    ('session_ttl = "1s"', "hub.session_ttl: must be at least"),
    ("max_clients = 0", "hub.max_clients: must be between 1"),
    ('tls_cert = "c.pem"', "park.toml:6: hub: tls_cert and tls_key go together"),
    ("max_frames = 3", "hub.max_frames: unknown key"),
])
def test_errors_name_the_key_and_its_line(tmp_path: Path, keys: str, words: str) -> None:
    with pytest.raises(ConfigError) as error:
        config_with(tmp_path, keys)
    text = str(error.value)
    assert words in text, text
    # The key's own line ([hub] is line 6, listen 7, the keys under test 8), or the table's.
    assert text.startswith(("park.toml:8: hub.", "park.toml:6: hub:")), text
