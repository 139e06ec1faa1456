"""The argument after a config file's colon: ``a,b,key=value``.

One parser for every config that takes an argument, so that each accepts
the same forms and refuses a bad one with the same kind of message:
positional values fill the names in order, ``name=value`` sets one by name,
and every value is converted to the type of its default.
"""

from __future__ import annotations

import ml_collections

REQUIRED = object()   # a name without a default must be given


def parse(arg: str, config_file: str, **spec) -> ml_collections.ConfigDict:
    """Names and defaults in ``spec`` order; ``REQUIRED`` marks those with none."""
    names = list(spec)
    values = dict(spec)
    given: set[str] = set()
    parts = [p.strip() for p in arg.split(",")] if arg.strip() else []
    usage = "".join(f",{n.upper()}" if spec[n] is REQUIRED else f"[,{n}={spec[n]}]"
                    for n in names).lstrip(",")
    usage_line = f"{config_file} takes {usage}"
    for i, part in enumerate(parts):
        if "=" in part:
            name, value = (s.strip() for s in part.split("=", 1))
            if name not in spec:
                raise ValueError(f"{config_file}: unknown argument {name!r} in "
                                 f"{arg!r}; {usage_line}")
        elif i < len(names) and not any("=" in p for p in parts[:i]):
            name, value = names[i], part
        else:
            raise ValueError(f"{config_file}: {part!r} in {arg!r} has no name "
                             f"and no place; {usage_line}")
        if not value:
            raise ValueError(f"{config_file}: {name} is empty in {arg!r}; {usage_line}")
        if name in given:
            raise ValueError(f"{config_file}: {name} is given twice in {arg!r}")
        given.add(name)
        values[name] = _like(spec[name], value, name, config_file)
    missing = [n for n in names if values[n] is REQUIRED]
    if missing:
        raise ValueError(f"{config_file} needs {usage} after the colon, got {arg!r}")
    return ml_collections.ConfigDict(values)


def _like(default, value: str, name: str, config_file: str):
    if default is REQUIRED or isinstance(default, str):
        return value
    if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{config_file}: {name}={value!r} is not true or false")
        return value.lower() in ("true", "1")
    try:
        return type(default)(value)
    except ValueError:
        raise ValueError(f"{config_file}: {name}={value!r} is not "
                         f"{type(default).__name__}") from None
