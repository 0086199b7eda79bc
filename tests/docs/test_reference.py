"""The reference pages cannot drift: the option table is generated from the CLI, and every
metric a master serves is documented."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

import aiohttp
import click

from sio_cluster.master.cli import main
from tests.cluster import MasterProcess
from tests.docs.examples import REPO


def docs_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "scripts/docs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_option_table_has_one_row_per_option() -> None:
    table = docs_hooks().render_options().splitlines()[2:]
    options = [p for p in main.params if isinstance(p, click.Option) and p.expose_value]
    assert len(table) == len(options)
    for row, option in zip(table, options, strict=True):
        assert row.startswith(f"| `{option.opts[0]}`") and f"| `{option.envvar}` |" in row, row


def test_the_options_page_expands_every_marker() -> None:
    page = docs_hooks().expand((REPO / "docs/reference/options.md").read_text())
    assert "<!-- generated" not in page
    assert "| `--redis-url` `TEXT` | `SIO_REDIS_URL` | none |" in page
    assert "usage: sio-master balancer-config" in page and "usage: sio-cleanup" in page


async def test_every_metric_served_is_documented(cluster: MasterProcess) -> None:
    url = f"http://127.0.0.1:{cluster.metrics_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        text = await answer.text()
    types = re.findall(r"^# TYPE (sio_master_\w+) ", text, re.MULTILINE)
    served = {name for name in types if not name.endswith("_created")}  # a counter's start time
    documented = (REPO / "docs/operating.md").read_text()
    assert len(served) > 10
    assert sorted(name for name in served if name not in documented) == []
