"""Render monitoring/alertmanager.yml from the environment: Alertmanager itself does not expand variables.

`${VAR}` must be set; `${VAR:-default}` falls back; comment lines are copied as they are. Standard library
only, so the compose stack can run it in a plain Python image:
`python render_alertmanager.py alertmanager.yml /etc/alertmanager/alertmanager.yml`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "alertmanager.yml"
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::-([^}]*))?\}")


def render(template: str, env: Mapping[str, str]) -> str:
    """Fill every placeholder; a missing required variable or a value with a line break is an error."""
    missing: list[str] = []

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name) or default
        if value is None:
            missing.append(name)
            return ""
        if "\n" in value or "\r" in value:
            raise ValueError(f"{name} must be a single line")
        return value.replace("\\", "\\\\").replace('"', '\\"')

    text = "".join(
        line if line.lstrip().startswith("#") else _PLACEHOLDER.sub(one, line) for line in template.splitlines(True)
    )
    if missing:
        raise ValueError(f"set {', '.join(sorted(set(missing)))} in the environment (see .env.example)")
    return text


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: render_alertmanager.py <template> <output>", file=sys.stderr)
        return 2
    try:
        text = render(Path(argv[0]).read_text(), os.environ)
    except ValueError as error:
        print(f"render_alertmanager: {error}", file=sys.stderr)
        return 1
    Path(argv[1]).write_text(text)
    print(f"render_alertmanager: wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
