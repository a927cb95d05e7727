"""The README as an entrance stays true: its picture's ports are the launcher's, every setting it names
exists, every page it links exists, and it stays short (the rest lives in docs/)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from bot_config import add_bot_flags
from servers.launch import BOT, MODEL_SERVERS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def picture() -> str:
    """The README's first code block under "How it fits together"."""
    section = README.split("## How it fits together", 1)[1]
    return section.split("```", 2)[1]


def test_the_picture_shows_each_service_on_its_port():
    drawn = picture()
    for service in (*MODEL_SERVERS, BOT):
        assert f":{service.default_port}" in drawn, (service.name, service.default_port)
        if service.command[0] == "-m":
            assert f"python -m {service.command[1]}" in drawn, service.name


def test_every_setting_the_readme_names_exists():
    helps = " ".join(add_bot_flags(argparse.ArgumentParser()).format_help().split())
    bot_variables = set(re.findall(r"\(env (BOT_\w+)", helps))
    named = set(re.findall(r"`(BOT_\w+)`", README))
    assert named and named <= bot_variables | {BOT.port_env}, named - bot_variables
    ports = {s.port_env for s in (*MODEL_SERVERS, BOT)}
    assert set(re.findall(r"`(\w+_PORT)`", README)) <= ports


def test_every_linked_page_exists_and_the_readme_stays_an_entrance():
    links = re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#[\w-]+)?\)", README)
    assert links
    for link in links:
        assert (ROOT / link).is_file(), link
    assert len(README.splitlines()) <= 300
