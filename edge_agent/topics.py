"""Topic templates: the one place they are validated, matched, turned into filters and filled.

Every MQTT topic the agent and the console use comes from a template in ``topics:`` such as
``plant/{plant}/{unit}/sensors/{sensor}``. Three readings of a template must agree, so they live
together: :func:`check_template` (what a config may write), :func:`topic_regex` (an incoming
topic → its unit, sensor, …), :func:`subscription_filter` (the wildcard filter to subscribe to)
and :func:`fill` (the topic to publish on). Pure string work, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from string import Formatter

#: Every placeholder a template may contain.
PLACEHOLDERS: frozenset[str] = frozenset({"plant", "unit", "sensor", "agent_id"})


def placeholders(template: str) -> list[str]:
    """The placeholder names in ``template``, in order (ValueError if it does not parse)."""
    try:
        return [name for _, name, _, _ in Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid topic template ({exc})") from None


def check_template(template: str, allowed: Collection[str], required: Collection[str]) -> None:
    """Refuse a template a publish or a subscription would trip over later, with the reason."""
    try:
        parsed = [(n, s, c) for _, n, s, c in Formatter().parse(template) if n is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid topic template ({exc})") from None
    names = [name for name, _, _ in parsed]
    if not template or "+" in template or "#" in template:
        raise ValueError("must be a non-empty topic without the wildcards + and #")
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        shown = ", ".join("{" + n + "}" for n in sorted(allowed))
        raise ValueError(f"unknown placeholder {{{unknown[0]}}} (allowed: {shown})")
    if any(spec or conv for _, spec, conv in parsed):
        raise ValueError("placeholders take no conversion or format spec, e.g. {unit}")
    missing = sorted(set(required) - set(names))
    if missing:
        raise ValueError(f"needs the placeholder {{{missing[0]}}}")
    for name in required:
        if names.count(name) > 1:
            raise ValueError(f"{{{name}}} must appear only once")


def fill(template: str, **values: str) -> str:
    """The topic to publish on; placeholders the template does not use are ignored."""
    return template.format_map(values)


def subscription_filter(template: str, known: Mapping[str, str]) -> str:
    """The wildcard filter for ``template``: ``known`` values filled in, every level holding a
    placeholder that is not known becomes ``+``."""
    levels = []
    for level in template.split("/"):
        try:
            levels.append(level.format_map(known))
        except KeyError:
            levels.append("+")
    return "/".join(levels)


def topic_regex(
    template: str, fixed: Mapping[str, str], captures: Mapping[str, str]
) -> re.Pattern[str]:
    """A regex matching the topics of ``template``: ``fixed`` placeholders as literal values,
    ``captures`` as named groups with the given body (e.g. ``{"unit": r"[A-Za-z0-9_.-]+"}``).
    Every capture must appear exactly once; any other placeholder is an error."""
    pattern, seen = "", []
    for part in re.split(r"(\{[a-z_]+\})", template):
        name = part[1:-1] if part.startswith("{") and part.endswith("}") else None
        if name is None:
            pattern += re.escape(part)
        elif name in fixed:
            pattern += re.escape(fixed[name])
        elif name in captures:
            if name in seen:
                raise ValueError(f"topic template {template!r}: {part} appears twice")
            seen.append(name)
            pattern += f"(?P<{name}>{captures[name]})"
        else:
            raise ValueError(f"topic template {template!r}: {part} is not allowed here")
    missing = [c for c in captures if c not in seen]
    if missing:
        raise ValueError(f"topic template {template!r} needs {{{'}, {'.join(missing)}}}")
    return re.compile(pattern)
