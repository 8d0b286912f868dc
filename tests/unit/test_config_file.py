"""Configuration files: typed data, never evaluated; options save and load back."""

from __future__ import annotations

import os
import sys

import pytest

from dispy.daemon import config_file
from dispy.daemon.config_file import ConfigError
from dispy.node import options

SCHEMA = {"cpus": int, "zombie_interval": float, "secret": str, "clean": bool,
          "ext_ip_addrs": list, "max_file_size": str}


def test_dumps_and_parse_round_trip():
    values = {"cpus": -1, "zombie_interval": 0.5, "secret": 'a "quoted" \\ sécret\n',
              "clean": True, "ext_ip_addrs": ["10.0.0.1", "b"], "max_file_size": "10m",
              "skipped": None}
    text = config_file.dumps(values, comment="line one\nline two")
    assert text.startswith("# line one\n# line two\n[dispynode]\n")
    assert "skipped" not in text
    del values["skipped"]
    assert config_file.check(config_file.parse_text(text), SCHEMA) == values


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_saved_file_is_toml():
    import tomllib

    values = {"cpus": 2, "zombie_interval": 1e-05, "secret": "s\t\u00e9\x01",
              "clean": False, "ext_ip_addrs": [], "max_file_size": "0"}
    text = config_file.dumps(values, "c")
    assert tomllib.loads(text)["dispynode"] == values
    assert config_file.parse_text(text) == values


def test_comments_literal_strings_and_json():
    text = """
        # comment
        [dispynode]   # trailing comment
        cpus = 3      # three
        secret = 'raw \\ "text"'
        ext_ip_addrs = [ "a" , 'b', ]
        zombie_interval = 1_0
    """
    assert config_file.parse_text(text) == {
        "cpus": 3, "secret": 'raw \\ "text"', "ext_ip_addrs": ["a", "b"],
        "zombie_interval": 10}
    assert config_file.parse_text('{"dispynode": {"cpus": 2}}') == {"cpus": 2}
    assert config_file.parse_text('{"cpus": 2, "clean": true}') == {"cpus": 2, "clean": True}


@pytest.mark.parametrize("text,message", [
    ("cpus = __import__('os').system('true')", "line 1: cannot read value"),
    ("cpus = 2\ncpus = 3", "line 2: cpus is given twice"),
    ("[other]\ncpus = 2", "unknown section"),
    ("cpus 2", "expected '='"),
    ("secret = \"open", "line 1: unterminated"),
    ("cpus = 2 3", "unexpected text"),
    ("ext_ip_addrs = [\"a\"", "list must be"),
    ("= 2", "expected key"),
    ("{1: 2}", "invalid JSON"),
    ("[1, 2]", "unknown section"),
    ("[\"not an object\"]", "unknown section"),
])
def test_parse_errors_name_the_line(text, message):
    with pytest.raises(ConfigError, match=message):
        config_file.parse_text(text)


@pytest.mark.parametrize("values,message", [
    ({"cpus": "2"}, "expected a value of type int"),
    ({"cpus": True}, "expected a value of type int"),
    ({"cpus": 1.5}, "expected a value of type int"),
    ({"clean": 1}, "expected true or false"),
    ({"ext_ip_addrs": "a"}, "expected a list of strings"),
    ({"ext_ip_addrs": [1]}, "expected a list of strings"),
    ({"secret": False}, "expected a value of type str"),
    ({"nonsense": 1}, "unknown option 'nonsense'"),
])
def test_check_types(values, message):
    with pytest.raises(ConfigError, match=message):
        config_file.check(values, SCHEMA)


def test_check_converts_where_harmless():
    assert config_file.check({"zombie_interval": 2, "max_file_size": 1024}, SCHEMA) == {
        "zombie_interval": 2.0, "max_file_size": "1024"}


def test_load_names_the_file(tmp_path):
    path = tmp_path / "node.cfg"
    path.write_text("cpus = 'x'\n")
    with pytest.raises(ConfigError, match=str(path)):
        config_file.load(str(path), SCHEMA)
    with pytest.raises(ConfigError, match="cannot read"):
        config_file.load(str(tmp_path / "missing.cfg"), SCHEMA)


def test_schema_covers_every_option():
    schema = options.config_schema()
    assert schema["cpus"] is int and schema["zombie_interval"] is float
    assert schema["clean"] is bool and schema["ip_addrs"] is list
    assert schema["secret"] is str and schema["service_start"] is str
    assert not set(config_file.NOT_STORED) & set(schema)


def save(tmp_path, *argv: str) -> str:
    path = tmp_path / "saved.cfg"
    with pytest.raises(SystemExit) as exc:
        options.parse([*argv, "--save_config", str(path)])
    assert exc.value.code == 0
    return path.read_text()


def test_save_leaves_out_node_specific_options_and_empty_secret(tmp_path):
    text = save(tmp_path, "-i", "127.0.0.1", "--ext_ip_addr", "10.1.1.1", "--name", "n1",
                "-c", "1")
    assert "127.0.0.1" not in text and "10.1.1.1" not in text and "n1" not in text
    assert "secret" not in text and "cpus = 1" in text
    text = save(tmp_path, "-s", "xyz")
    assert 'secret = "xyz"' in text


def test_saved_config_loads_back_to_the_same_options(tmp_path):
    argv = ["-c", "-1" if (os.cpu_count() or 1) > 1 else "1", "-s", "s3", "-d",
            "--zombie_interval", "10", "--service_start", "17:00", "--service_stop", "6:00",
            "--service_end", "8:00", "--max_file_size", "10m", "--serve", "3", "--clean",
            "-p", "40001", "--ping_interval", "30", "--client_shutdown"]
    text = save(tmp_path, *argv)
    direct = options.parse(argv)
    loaded = options.parse(["--config", str(tmp_path / "saved.cfg")])
    loaded.config_file = None
    assert loaded == direct
    # saving what was loaded writes the same file again
    assert save(tmp_path, "--config", str(tmp_path / "saved.cfg")) == text


def test_command_line_wins_over_file(tmp_path):
    cfg = tmp_path / "node.cfg"
    cfg.write_text('[dispynode]\ncpus = 1\nsecret = "file"\nserve = 2\nclean = true\n'
                   'ip_addrs = ["127.0.0.1"]\n')
    opts = options.parse(["--config", str(cfg), "-s", "cli", "--serve", "-1"])
    assert (opts.cpus, opts.secret, opts.serve, opts.clean) == (1, "cli", -1, True)
    assert opts.ip_addrs == ["127.0.0.1"]  # a hand-written node file may hold them
    opts = options.parse(["--config", str(cfg), "-i", "localhost"])
    assert opts.ip_addrs == ["localhost"]


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    cfg = tmp_path / "node.cfg"
    cfg.write_text("cpus = 'many'\n")
    with pytest.raises(SystemExit) as exc:
        options.parse(["--config", str(cfg)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "cpus" in err
