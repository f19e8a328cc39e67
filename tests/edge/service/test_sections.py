from dataclasses import dataclass, field

import pytest

from edge.errors import ConfigError
from edge.service.sections import invalid, parse_section


@dataclass(frozen=True)
class Tls:
    ca_certs: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class Example:
    host: str = "127.0.0.1"
    port: int = 1883
    interval: float = 5.0
    thresholds: dict[str, float] = field(default_factory=dict)
    topics: list[str] = field(default_factory=list)
    tls: Tls | None = None

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise invalid("port", self.port, "a TCP port from 1 to 65535")


def test_values_are_read_and_converted():
    got = parse_section(
        Example, {"port": 8883, "interval": 2, "thresholds": {"siren": 0.7}, "tls": {"insecure": True}}, "mqtt"
    )
    assert got == Example(port=8883, interval=2.0, thresholds={"siren": 0.7}, tls=Tls(insecure=True))
    assert isinstance(got.interval, float)
    assert parse_section(Example, None, "mqtt") == Example()


@pytest.mark.parametrize("mapping, key, text", [
    ({"prot": 1}, "mqtt.prot", "did you mean `port`?"),
    ({"port": "1883"}, "mqtt.port", "'1883' is not allowed: use a whole number"),
    ({"port": True}, "mqtt.port", "a whole number"),
    ({"port": 0}, "mqtt.port", "mqtt.port 0 is not allowed: use a TCP port from 1 to 65535"),
    ({"interval": float("nan")}, "mqtt.interval", "a number"),
    ({"host": None}, "mqtt.host", "leave the key out"),
    ({"thresholds": {"siren": "high"}}, "mqtt.thresholds.siren", "a number"),
    ({"topics": ["a", 3]}, "mqtt.topics[1]", "a text"),
    ({"tls": {"insecure": "yes"}}, "mqtt.tls.insecure", "true or false"),
    ({"tls": {"ca": "x"}}, "mqtt.tls.ca", "the keys are: ca_certs, insecure"),
])
def test_errors_name_the_dotted_key_the_value_and_what_is_allowed(mapping, key, text):
    with pytest.raises(ConfigError) as info:
        parse_section(Example, mapping, "mqtt")
    assert info.value.key == key and key in str(info.value) and text in str(info.value)


def test_a_section_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match="mqtt must be a mapping") as info:
        parse_section(Example, ["host"], "mqtt")
    assert info.value.key == "mqtt"
