from pathlib import Path

import pytest

from clew.config import ConfigError, Settings


def test_precedence_defaults_file_env_flags(tmp_path, monkeypatch):
    config = tmp_path / "clew.toml"
    config.write_text('[serve]\ndata_dir = "/from/file"\notlp_http_port = 5000\nzipkin_port = 5001\n')
    monkeypatch.setenv("CLEW_OTLP_HTTP_PORT", "6000")
    monkeypatch.setenv("CLEW_HTTP_PORT", "6001")
    s = Settings.load(config, http_port=7000, host=None)
    assert s.data_dir == Path("/from/file")  # file
    assert s.zipkin_port == 5001  # file
    assert s.otlp_http_port == 6000  # env beats file
    assert s.http_port == 7000  # flag beats env
    assert s.host == "127.0.0.1"  # default, an unset flag changes nothing
    assert s.otlp_grpc_port == 4317


def test_bad_settings_are_named(tmp_path, monkeypatch):
    config = tmp_path / "clew.toml"
    config.write_text("[serve]\nzipkn_port = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'zipkn_port'"):
        Settings.load(config)
    monkeypatch.setenv("CLEW_HTTP_PORT", "many")
    with pytest.raises(ConfigError, match="http_port must be a number"):
        Settings.load()
    config.write_text("not toml [")
    with pytest.raises(ConfigError, match="cannot read config file"):
        Settings.load(config)


def test_listening_sockets_disable_nagle() -> None:
    """Responses went out ~40 ms late (Nagle + delayed ACK) when accepted sockets kept Nagle on."""
    import socket

    from clew.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY on accepted sockets only then
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        sock.close()
