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


def test_retention_has_its_own_table_and_reads_the_first_documented_keys(tmp_path):
    day = 86400 * 10**9
    config = tmp_path / "clew.toml"

    def load(text: str) -> Settings:
        config.write_text(text)
        return Settings.load(config)

    assert load('[retention]\nperiod = "3d"\ninterval = "30s"\n').retention.period == 3 * day
    assert load('[retention]\ninterval = "30s"\n').retention.interval == 30 * 10**9
    assert load('[sampling]\nretention = "2d"\n').retention.period == 2 * day  # where it was documented
    both = load('[sampling]\nretention = "2d"\n[retention]\nperiod = "5d"\n')
    assert both.retention.period == 5 * day
    assert load("[sampling]\nenabled = false\n").retention.full_fidelity is None  # nothing swept early
    assert load('[sampling]\nfull_fidelity = "2h"\n').retention.full_fidelity == 2 * 3600 * 10**9
    with pytest.raises(ConfigError, match="unknown setting 'keep'"):
        load('[retention]\nkeep = "1d"\n')
    with pytest.raises(ConfigError, match="full_fidelity must not be longer than retention"):
        load('[sampling]\nfull_fidelity = "2d"\nmax_age = "5m"\n[retention]\nperiod = "1d"\n')
    with pytest.raises(ConfigError, match=r"\[retention\] period: cannot parse duration"):
        load('[retention]\nperiod = "forever"\n')


def test_the_store_comes_from_storage_its_table_env_or_flag(tmp_path, monkeypatch):
    from clew.store.server_connection import ServerAddress

    config = tmp_path / "clew.toml"
    config.write_text('[storage]\nurl = "clickhouse://clew:s%40cret@ch:8123/traces"\ncluster = "c1"\n')
    s = Settings.load(config)
    assert (s.storage, s.cluster, s.instance_lease_s) == (
        "clickhouse://clew:s%40cret@ch:8123/traces",
        "c1",
        15,
    )
    address = ServerAddress.parse(s.storage)
    assert (address.host, address.port, address.secure) == ("ch", 8123, False)
    assert (address.username, address.password, address.database) == ("clew", "s@cret", "traces")
    assert ServerAddress.parse("https://ch").port == 8443 and ServerAddress.parse("https://ch").secure
    assert ServerAddress.parse("clickhouse://ch").database == "clew"
    monkeypatch.setenv("CLEW_STORAGE", "clickhouse://other:8123/x")
    assert Settings.load(config).storage == "clickhouse://other:8123/x"
    assert Settings.load(config, storage="embedded").storage == "embedded"
    config.write_text('[storage]\nurl = "mysql://u:hunter2@h/db"\n')
    monkeypatch.delenv("CLEW_STORAGE")
    with pytest.raises(ConfigError, match="scheme") as refused:
        ServerAddress.parse(Settings.load(config).storage)
    assert "hunter2" not in str(refused.value)  # a password never reaches a message
    for bad in ("clickhouse://h/no-dashes", "clickhouse://h:99999/x", "clickhouse:///x"):
        with pytest.raises(ConfigError):
            ServerAddress.parse(bad)
