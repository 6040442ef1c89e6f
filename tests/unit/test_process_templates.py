"""The process manager's files carry any value as that value, or refuse it: no value adds a line, a section or a
comment, and no value is expanded by supervisord or systemd.

The templates are rendered as the template action renders them (Ansible's Templar, trim_blocks) and supervisord's
files are read back with supervisord's own parser.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from supervisor.datatypes import dict_of_key_value_pairs
from supervisor.options import UnhosedConfigParser, expand

TEMPLATES = Path(__file__).resolve().parents[2] / "roles" / "process_supervisor" / "templates"
SECRET = "s3cr3t-value"


def program(**changes: Any) -> dict[str, Any]:
    return {
        "ansible_managed": "managed by kumiai",
        "process_supervisor_dir": "/var/lib/kumiai/supervisor",
        "process_supervisor_program_name": "patroni-nakai-site-a-1",
        "process_supervisor_program_command": "/opt/kumiai/bin/patroni /var/lib/kumiai/nakai/patroni.yml",
        "process_supervisor_program_user": "kumiai-nakai",
        "process_supervisor_program_directory": "/var/lib/kumiai/nakai",
        "process_supervisor_program_environment": {},
        "process_supervisor_program_priority": 999,
        "process_supervisor_program_autostart": True,
        "process_supervisor_program_stop_wait_seconds": 60,
        **changes,
    }


def render(template: str, variables: dict[str, Any]) -> str:
    templar = Templar(loader=DataLoader(), variables=variables)
    text = trust_as_template((TEMPLATES / template).read_text(encoding="utf-8"))
    # As the template action does (ansible/plugins/action/template.py).
    return str(
        templar.template(text, escape_backslashes=False, overrides={"trim_blocks": True, "lstrip_blocks": False})
    )


def supervisord_program(text: str) -> tuple[list[str], dict[str, str]]:
    """The sections supervisord sees, and the one program's options after its %-expansion."""
    parser = UnhosedConfigParser()
    parser.read_string(text)
    sections = parser.sections()
    options = {k: expand(v, {}, k) for k, v in parser.items(sections[0])}
    return sections, options


# --- supervisord


def test_an_ordinary_program_reads_back_as_given() -> None:
    env = {"PGPASSFILE": "/var/lib/kumiai/nakai/.pgpass", "TZ": "Asia/Tokyo"}
    text = render("program.conf.j2", program(process_supervisor_program_environment=env))
    sections, options = supervisord_program(text)
    assert sections == ["program:patroni-nakai-site-a-1"]
    assert shlex.split(options["command"]) == [
        "/opt/kumiai/bin/patroni",
        "/var/lib/kumiai/nakai/patroni.yml",
    ]
    assert options["user"] == "kumiai-nakai"
    assert options["directory"] == "/var/lib/kumiai/nakai"
    assert dict_of_key_value_pairs(options["environment"]) == env
    assert options["autostart"] == "true"
    assert options["stdout_logfile"] == "/var/lib/kumiai/supervisor/log/patroni-nakai-site-a-1.log"
    assert text.startswith("; managed by kumiai\n[program:")


def test_percent_signs_are_not_expanded() -> None:
    """%(ENV_HOME)s would be replaced by supervisord's own environment; it must arrive as written."""
    env = {"LABEL": "100%(ENV_HOME)s"}
    command = "/bin/echo %(ENV_HOME)s 50%"
    text = render(
        "program.conf.j2",
        program(process_supervisor_program_command=command, process_supervisor_program_environment=env),
    )
    _, options = supervisord_program(text)
    assert options["command"] == command
    assert dict_of_key_value_pairs(options["environment"]) == env


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"process_supervisor_program_command": "/bin/true\n[program:x]\ncommand=/bin/sh"}, "command"),
        ({"process_supervisor_program_command": "/bin/true\r"}, "command"),
        ({"process_supervisor_program_command": "/bin/true ; rm -rf /"}, "command"),
        ({"process_supervisor_program_command": "/bin/true #x"}, "command"),
        ({"process_supervisor_program_user": "root\nuser=x"}, "user"),
        ({"process_supervisor_program_directory": "/srv\x00x"}, "directory"),
        ({"process_supervisor_program_name": "x]\n[program:y"}, "the name"),
        ({"process_supervisor_program_name": "../etc/x"}, "the name"),
        ({"process_supervisor_program_name": "x:y"}, "the name"),  # ':' is supervisord's group separator
        ({"process_supervisor_program_environment": {"A": f'{SECRET}",B="x'}}, "environment A"),
        ({"process_supervisor_program_environment": {"A": f"{SECRET}'"}}, "environment A"),
        ({"process_supervisor_program_environment": {"A": f"{SECRET}\n[program:x]"}}, "environment A"),
        ({"process_supervisor_program_environment": {"A=B": "x"}}, "environment key 1"),
    ],
)
def test_a_value_supervisord_cannot_carry_is_refused(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(AnsibleError) as info:
        render("program.conf.j2", program(**changes))
    message = str(info.value)
    assert f"process_supervisor: {field} of program " in message
    assert "cannot be written to a supervisord file" in message
    assert SECRET not in message


# --- systemd


def unit_lines(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_an_ordinary_unit() -> None:
    env = {"PGPASSFILE": "/var/lib/kumiai/nakai/.pgpass"}
    lines = unit_lines(render("systemd.service.j2", program(process_supervisor_program_environment=env)))
    assert lines["ExecStart"] == ["/opt/kumiai/bin/patroni /var/lib/kumiai/nakai/patroni.yml"]
    assert lines["User"] == ["kumiai-nakai"]
    assert lines["WorkingDirectory"] == ["/var/lib/kumiai/nakai"]
    assert lines["Environment"] == ['"PGPASSFILE=/var/lib/kumiai/nakai/.pgpass"']


def test_systemd_specifiers_variables_and_quotes_are_escaped() -> None:
    env = {"A": 'say "hi" 100% \\o/'}
    text = render(
        "systemd.service.j2",
        program(process_supervisor_program_command="/bin/echo $HOME %h", process_supervisor_program_environment=env),
    )
    lines = unit_lines(text)
    assert lines["ExecStart"] == ["/bin/echo $$HOME %%h"]
    assert lines["Environment"] == ['"A=say \\"hi\\" 100%% \\\\o/"']


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"process_supervisor_program_command": "/bin/true\nExecStartPre=/bin/sh"}, "command"),
        ({"process_supervisor_program_command": "/bin/true \\"}, "command"),  # continues on the next line
        ({"process_supervisor_program_user": "root\n[Service]"}, "user"),
        ({"process_supervisor_program_name": "x\n[Service]"}, "the name"),
        ({"process_supervisor_program_environment": {"A": f"{SECRET}\nExecStartPre=/bin/sh"}}, "environment A"),
        ({"process_supervisor_program_environment": {"A B": "x"}}, "environment key 1"),
    ],
)
def test_a_value_systemd_cannot_carry_is_refused(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(AnsibleError) as info:
        render("systemd.service.j2", program(**changes))
    message = str(info.value)
    assert f"process_supervisor: {field} of program " in message
    assert "cannot be written to a systemd unit" in message
    assert SECRET not in message
