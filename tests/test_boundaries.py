"""The architecture's rules, as tests: what the agent may import, and what it may print.

* Nothing under ``edge_agent`` imports TensorFlow, Keras, scikit-learn, skl2onnx, tf2onnx or
  ``training``: the agent runs on a small box with onnxruntime only. Checked twice: a static
  scan of every module's source (imports inside functions and ``TYPE_CHECKING`` blocks, and
  ``importlib.import_module("...")`` with a literal name, count too), and a subprocess that
  imports every module and looks at ``sys.modules`` (catches a dependency that pulls one in).
* ``edge_agent/pipeline`` is the pure data path: no network, database, process or thread I/O
  and no wall clock (the clock is injected), nothing from ``edge_agent.daemon`` or
  ``edge_agent.tools``. Of the rest of ``edge_agent`` it may use only ``config`` (settings
  models), ``topics`` (pure string work) and ``metrics`` (in-memory Prometheus counters; the
  daemon serves them) — judged acceptable, not injected: all are plain objects, and although
  importing ``prometheus_client`` loads its HTTP exposition code, nothing in the pipeline
  calls it.
  Monotonic clocks (``time.monotonic``, ``time.perf_counter``) measure durations and
  rate-limit log lines; only wall-clock reads are refused. ``onnxruntime`` is compute.
* Configuration errors never echo a secret, even a scalar where a string belongs.
* paho and aiomqtt are imported only in ``edge_agent/daemon/mqtt/`` (behind its transport
  interface) and ``edge_agent/tools/`` (the simulated plant and the demo are MQTT clients of
  their own, outside the runtime); the MQTT package's public API (``__all__``) names no
  paho or aiomqtt type in its signatures.

Every rule has a case below that feeds it a synthetic offender, so the scan is shown to fail.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from edge_agent.config import ConfigError, load_settings
from edge_agent.config_loading import error_lines

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "edge_agent"

#: Never imported by the agent (the training stack and the training package).
TRAINING_STACK = ("tensorflow", "keras", "tf_keras", "sklearn", "skl2onnx", "tf2onnx", "training")
#: Never imported by the pure data path.
PIPELINE_IO = (
    "asyncio",
    "aiomqtt",
    "paho",
    "sqlite3",
    "socket",
    "ssl",
    "selectors",
    "http",
    "urllib",
    "subprocess",
    "threading",
    "multiprocessing",
    "concurrent",
    "edge_agent.daemon",
    "edge_agent.tools",
)
#: Of edge_agent outside the pipeline, what the pipeline may import.
PIPELINE_MAY_USE = ("edge_agent.config", "edge_agent.metrics", "edge_agent.topics")
#: Calls that read the wall clock.
WALL_CLOCK = {("time", "time"), ("time", "time_ns"), ("datetime", "now"), ("datetime", "utcnow")}
WALL_CLOCK |= {("date", "today")}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    """The package a module's relative imports start from."""
    return ".".join(path.relative_to(REPO).parent.parts)


def agent_modules(under: Path = PACKAGE) -> list[Path]:
    return sorted(under.rglob("*.py"))


def imported_names(source: str, package: str) -> set[str]:
    """Every module name ``source`` imports, anywhere in it, relative imports resolved."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            base_name = ".".join([*base, node.module] if node.module else base)
            names.add(base_name)
            names.update(f"{base_name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
                names.add(str(first.value))
    return names


def wall_clock_reads(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and (owner.id, node.func.attr) in WALL_CLOCK:
                found.append(f"{owner.id}.{node.func.attr}() at line {node.lineno}")
        if isinstance(node, ast.ImportFrom) and node.module == "time":
            found += [f"from time import {a.name}" for a in node.names if a.name in {"time"}]
    return found


def matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def training_stack_imports(source: str, package: str) -> list[str]:
    return sorted(n for n in imported_names(source, package) if matches(n, TRAINING_STACK))


def pipeline_violations(source: str, package: str) -> list[str]:
    names = imported_names(source, package)
    bad = [n for n in names if matches(n, PIPELINE_IO)]
    bad += [
        n
        for n in names
        if matches(n, ("edge_agent",))
        and not matches(n, ("edge_agent.pipeline", *PIPELINE_MAY_USE))
        and n != "edge_agent"
    ]
    return sorted(bad) + wall_clock_reads(source)


# -- (a) the training stack ----------------------------------------------------------------


@pytest.mark.parametrize("path", agent_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_agent_module_imports_the_training_stack(path: Path) -> None:
    found = training_stack_imports(path.read_text(encoding="utf-8"), package_of(path))
    assert found == [], f"{path.relative_to(REPO)} imports {found}"


def loaded_after_importing(
    modules: list[str], baseline: list[str], extra_path: Path | None = None
) -> set[str]:
    """Top-level names in sys.modules that importing ``modules`` (after ``baseline``) adds."""
    script = (
        "import importlib, json, sys\n"
        f"for m in {baseline!r}: importlib.import_module(m)\n"
        "before = {n.split('.')[0] for n in sys.modules}\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules} - before)))\n"
    )
    path = [str(REPO), *([str(extra_path)] if extra_path else []), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
        cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded: set[str] = set(json.loads(done.stdout.strip().splitlines()[-1]))
    return loaded


def every_agent_module() -> list[str]:
    return [module_name(p) for p in agent_modules() if p.name != "__main__.py"]


def test_importing_every_agent_module_loads_none_of_the_training_stack() -> None:
    loaded = loaded_after_importing(every_agent_module(), [])
    assert "edge_agent" in loaded and "onnxruntime" in loaded  # it did import them
    assert sorted(loaded & set(TRAINING_STACK)) == []


def test_the_import_check_catches_a_module_that_loads_training(tmp_path: Path) -> None:
    (tmp_path / "leaky_module.py").write_text("import training\n", encoding="utf-8")
    loaded = loaded_after_importing(["leaky_module"], [], extra_path=tmp_path)
    assert "training" in loaded & set(TRAINING_STACK)


@pytest.mark.parametrize(
    "source",
    [
        "import sklearn.ensemble\n",
        "def fit():\n    from sklearn.ensemble import IsolationForest\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tensorflow as tf\n",
        "import keras\n",
        "from skl2onnx import convert_sklearn\n",
        "import tf2onnx.convert\n",
        "from training.pipeline import train\n",
        "import training\n",
        "import importlib\nlib = importlib.import_module('tensorflow')\n",
    ],
)
def test_the_training_stack_scan_fails_on_an_offender(source: str) -> None:
    assert training_stack_imports(source, "edge_agent.pipeline") != []


def test_the_training_stack_scan_passes_what_the_agent_may_use() -> None:
    source = "import numpy as np\nimport onnxruntime as ort\nfrom edge_agent import config\n"
    assert training_stack_imports(source, "edge_agent.pipeline") == []
    # "training" as a word elsewhere is not an import of the package
    assert (
        training_stack_imports("from .manifest import training_data\n", "edge_agent.pipeline") == []
    )


# -- (b) the pure data path ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path", agent_modules(PACKAGE / "pipeline"), ids=lambda p: str(p.relative_to(REPO))
)
def test_pipeline_module_does_no_io_and_reads_no_wall_clock(path: Path) -> None:
    found = pipeline_violations(path.read_text(encoding="utf-8"), package_of(path))
    assert found == [], f"{path.relative_to(REPO)}: {found}"


def test_importing_the_pipeline_loads_no_io_beyond_its_allowed_dependencies() -> None:
    """Transitively: the pipeline adds no I/O module to what its allowed dependencies load."""
    pipeline = [module_name(p) for p in agent_modules(PACKAGE / "pipeline")]
    baseline = [*PIPELINE_MAY_USE, "numpy", "onnxruntime", "pydantic", "structlog", "orjson"]
    added = loaded_after_importing(pipeline, baseline)
    assert "edge_agent" not in added  # the baseline already loaded the package
    assert sorted(n for n in added if matches(n, PIPELINE_IO)) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio\n",
        "import aiomqtt\n",
        "import paho.mqtt.client as mqtt\n",
        "def save():\n    import sqlite3\n",
        "import socket\n",
        "from http.server import HTTPServer\n",
        "from urllib.request import urlopen\n",
        "import subprocess\n",
        "import threading\n",
        "from edge_agent.daemon.outbox import Outbox\n",
        "from edge_agent.daemon import mqtt\n",
        "from ..daemon import server\n",
        "from ..tools.simulator import simulate\n",
        "from edge_agent.cli import main\n",
        "import time\nnow = time.time()\n",
        "from datetime import datetime\nstamp = datetime.now()\n",
    ],
)
def test_the_pipeline_scan_fails_on_an_offender(source: str) -> None:
    assert pipeline_violations(source, "edge_agent.pipeline") != []


def test_the_pipeline_scan_passes_what_the_pipeline_may_use() -> None:
    source = (
        "import time\nt0 = time.perf_counter()\n"
        "from datetime import UTC, datetime\ndatetime.fromtimestamp(0, tz=UTC)\n"
        "from edge_agent.metrics import Metrics\nfrom edge_agent.config import AgentSettings\n"
        "from .alerts import Alert\nimport onnxruntime\n"
    )
    assert pipeline_violations(source, "edge_agent.pipeline") == []


# -- (c) secrets in configuration errors ---------------------------------------------------

SECRET = "12345678"


def test_a_scalar_password_is_not_echoed_in_config_errors(tmp_path: Path) -> None:
    """A number where the password string belongs is still a password; the key beside it
    (also invalid) is reported with its value as usual."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"units: [{{name: u1}}]\nmqtt: {{password: {SECRET}, port: not-a-port}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    lines = exc.value.problems
    assert any(line.startswith("config key mqtt.password:") for line in lines), lines
    assert any("mqtt.port" in line and "not-a-port" in line for line in lines), lines
    assert SECRET not in "\n".join(lines) and SECRET not in str(exc.value)


class _Secrets(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str
    password_hash: str
    session_secret: str
    port: int


def test_no_secret_key_echoes_its_value() -> None:
    """The same guard covers the console's keys (password_hash, session_secret)."""
    with pytest.raises(ValidationError) as exc:
        _Secrets(password=12345678, password_hash=87654321, session_secret=1122334455, port="x")  # type: ignore[arg-type]
    text = "\n".join(error_lines(exc.value))
    assert text.count("config key") == 4 and "(got 'x')" in text
    for value in ("12345678", "87654321", "1122334455"):
        assert value not in text


# -- (d) the MQTT libraries stay behind the transport ---------------------------------------

MQTT_LIBRARIES = ("aiomqtt", "paho")
#: Where paho and aiomqtt may be imported: the transport, and the tools (own MQTT clients).
MQTT_OWNERS = (PACKAGE / "daemon" / "mqtt", PACKAGE / "tools")
#: Words that give a paho or aiomqtt type away in an annotation (``MessageProperties`` is ours).
MQTT_TYPE_WORDS = re.compile(r"\b(aiomqtt|paho|Properties|ReasonCode|SubscribeOptions|Client)\b")


def mqtt_library_imports(source: str, package: str) -> list[str]:
    return sorted(n for n in imported_names(source, package) if matches(n, MQTT_LIBRARIES))


def outside_the_mqtt_owners() -> list[Path]:
    return [p for p in agent_modules() if not any(p.is_relative_to(o) for o in MQTT_OWNERS)]


@pytest.mark.parametrize("path", outside_the_mqtt_owners(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_outside_the_transport_imports_paho_or_aiomqtt(path: Path) -> None:
    found = mqtt_library_imports(path.read_text(encoding="utf-8"), package_of(path))
    assert found == [], f"{path.relative_to(REPO)} imports {found}: use edge_agent.daemon.mqtt"


def test_the_mqtt_owners_exist_and_do_use_the_libraries() -> None:
    """Guards the exemption itself: a moved transport must not leave the check vacuous."""
    link = PACKAGE / "daemon" / "mqtt" / "link.py"
    assert mqtt_library_imports(link.read_text(encoding="utf-8"), package_of(link))
    assert len(outside_the_mqtt_owners()) > 30 and (PACKAGE / "daemon" / "server.py").exists()


@pytest.mark.parametrize(
    "source",
    [
        "import aiomqtt\n",
        "from paho.mqtt.properties import Properties\n",
        "def publish():\n    import paho.mqtt.client as mqtt\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from aiomqtt import Client\n",
        "import importlib\nlib = importlib.import_module('aiomqtt')\n",
    ],
)
def test_the_mqtt_library_scan_fails_on_an_offender(source: str) -> None:
    assert mqtt_library_imports(source, "edge_agent.daemon") != []


def test_the_mqtt_library_scan_passes_the_transport_interface() -> None:
    source = (
        "from edge_agent.daemon.mqtt import MessageProperties, Transport\nfrom .mqtt import link\n"
    )
    assert mqtt_library_imports(source, "edge_agent.daemon") == []


def leaked_types(obj: object) -> list[str]:
    """Annotations (and, for aliases, the value) of ``obj`` that name a paho/aiomqtt type."""
    texts: list[str] = []
    if inspect.isclass(obj):
        texts += [str(a) for a in inspect.get_annotations(obj).values()]
        members = [m for n, m in vars(obj).items() if not n.startswith("_") or n == "__init__"]
        for member in members:
            func = member.fget if isinstance(member, property) else member
            if callable(func):
                texts += [str(a) for a in inspect.get_annotations(func).values()]
    elif callable(obj) and hasattr(obj, "__annotations__"):
        texts += [str(a) for a in inspect.get_annotations(obj).values()]
    else:
        texts.append(repr(obj))
    return [t for t in texts if MQTT_TYPE_WORDS.search(t)]


def test_the_mqtt_public_api_names_no_paho_or_aiomqtt_type() -> None:
    api = importlib.import_module("edge_agent.daemon.mqtt")
    assert "Transport" in api.__all__ and "MqttLink" in api.__all__
    leaks = {name: leaked_types(getattr(api, name)) for name in api.__all__}
    assert {name: found for name, found in leaks.items() if found} == {}


def test_the_public_api_check_fails_on_a_leaking_signature() -> None:
    source = (
        "from __future__ import annotations\n"
        "def alert_properties(alert_id: str) -> Properties: ...\n"
        "class Link:\n"
        "    async def publish(self, topic: str, properties: paho.Properties) -> bool: ...\n"
        "    @property\n"
        "    def client(self) -> aiomqtt.Client: ...\n"
    )
    namespace: dict[str, object] = {}
    exec(compile(source, "<offender>", "exec", dont_inherit=True), namespace)
    assert leaked_types(namespace["alert_properties"]) == ["Properties"]
    assert leaked_types(namespace["Link"]) == ["paho.Properties", "aiomqtt.Client"]
