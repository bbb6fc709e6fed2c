"""The UCI options: the table the engine declares, their values, and ``setoption``.

Each :class:`Option` knows its declaration line and how to read a value;
:func:`apply_setoption` reads the words of one ``setoption`` command and
changes at most one option, explaining every refusal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from neuralengine.uci.output import echo

#: Backend names (the same as :data:`neuralengine.backends.BACKENDS`, written
#: out here so that ``uci`` needs no NumPy import).
BACKEND_CHOICES = ("auto", "onnx", "torch-cpu", "torch-cuda")

#: Highest accepted ``Temperature``.
MAX_TEMPERATURE = 100.0

#: Options whose change needs the weights to be loaded again (lower-case names).
LOAD_OPTIONS = ("weightsfile", "backend", "threads", "candidatemodel", "int8")

#: How a language model behind HTTP finds its move (``LLMMode``; see :mod:`neuralengine.textlm.http`).
LLM_MODES = ("auto", "score", "sample", "chat")

#: Options whose values are secrets: never echoed, never logged (lower-case names).
SECRET_OPTIONS = ("llmapikey",)


@dataclass
class Option:
    """One UCI option: its declaration and its current value."""

    name: str
    type: str  # check, spin, combo, string, button
    default: Any
    min: int | None = None
    max: int | None = None
    choices: tuple[str, ...] = ()
    #: Extra check for string options: returns an error message or ``None``.
    validate: Callable[[str], str | None] | None = None
    value: Any = None

    def __post_init__(self) -> None:
        self.value = self.default

    def declaration(self) -> str:
        """The ``option name … type …`` line."""
        line = f"option name {self.name} type {self.type}"
        if self.type == "check":
            line += f" default {'true' if self.default else 'false'}"
        elif self.type == "spin":
            line += f" default {self.default} min {self.min} max {self.max}"
        elif self.type == "combo":
            line += f" default {self.default}" + "".join(f" var {c}" for c in self.choices)
        elif self.type == "string":
            line += f" default {self.default if self.default != '' else '<empty>'}"
        return line

    def parse(self, raw: str | None) -> Any:
        """The value of ``raw`` for this option; raises ``ValueError`` with a message."""
        text = "" if raw is None else raw.strip()
        if self.type == "button":
            return True
        if self.type == "check":
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
            raise ValueError(f"{self.name} takes true or false, not {echo(text)}")
        if self.type == "spin":
            try:
                number = int(text)
            except ValueError:
                raise ValueError(f"{self.name} takes an integer, not {echo(text)}") from None
            assert self.min is not None and self.max is not None
            if not self.min <= number <= self.max:
                raise ValueError(f"{self.name} must be between {self.min} and {self.max}, not {number}")
            return number
        if self.type == "combo":
            for choice in self.choices:
                if choice.lower() == text.lower():
                    return choice
            raise ValueError(f"{self.name} takes one of {', '.join(self.choices)}, not {echo(text)}")
        if text == "<empty>":
            text = ""
        if self.validate is not None:
            problem = self.validate(text)
            if problem:
                raise ValueError(problem)
        return text


def _check_temperature(text: str) -> str | None:
    try:
        value = float(text)
    except ValueError:
        return f"Temperature takes a number such as 0 or 0.005, not {echo(text)}"
    if not math.isfinite(value) or not 0.0 <= value <= MAX_TEMPERATURE:
        return f"Temperature must be between 0 and {MAX_TEMPERATURE:g}, not {echo(text)}"
    return None


def default_weights_path() -> str:
    from neuralengine.paths import default_weights

    return str(default_weights())


def make_options(weights: str | None = None, backend: str = "auto", threads: int = 1, candidate: str = "",
                 int8: bool = False, *, llm_model: str = "", llm_mode: str = "auto") -> dict[str, Option]:
    """The option table, keyed by lower-case name.

    The ``LLM...`` options matter only when ``WeightsFile`` is an
    ``http(s)://`` URL (a language model behind an OpenAI-compatible
    endpoint). ``LLMApiKey`` has no default here: the environment supplies
    one, and a key is never printed.
    """
    options = [
        Option("WeightsFile", "string", weights if weights is not None else default_weights_path()),
        Option("CandidateModel", "string", candidate),
        Option("Int8", "check", int8),
        Option("Backend", "combo", backend, choices=BACKEND_CHOICES),
        Option("Threads", "spin", threads, 1, 256),
        Option("BatchSize", "spin", 256, 1, 4096),
        Option("MultiPV", "spin", 1, 1, 256),
        Option("Move Overhead", "spin", 30, 0, 10000),
        Option("Temperature", "string", "0", validate=_check_temperature),
        Option("TemperatureMoves", "spin", 0, 0, 10000),
        Option("Seed", "spin", 0, 0, 2**31 - 1),
        Option("MateRule", "check", True),
        Option("ConvertRule", "check", True),
        Option("Ponder", "check", False),
        Option("UCI_ShowWDL", "check", False),
        Option("UCI_Chess960", "check", False),
        Option("LLMModel", "string", llm_model),
        Option("LLMApiKey", "string", ""),
        Option("LLMMode", "combo", llm_mode, choices=LLM_MODES),
        Option("LLMTimeout", "spin", 30, 1, 3600),
        Option("LLMTries", "spin", 4, 1, 10),
    ]
    return {o.name.lower(): o for o in options}


def apply_setoption(options: dict[str, Option], args: list[str]) -> Option:
    """Set the option named by the words after ``setoption``; returns it.

    Raises ``ValueError`` with the message for the GUI when the words are not
    ``name NAME [value VALUE]``, name no option, or give a value the option
    does not take; the option then keeps its value.
    """
    lower = [a.lower() for a in args]
    if not args or lower[0] != "name":
        raise ValueError("usage: setoption name NAME [value VALUE]")
    if "value" in lower[1:]:
        split = lower.index("value", 1)
        name, raw = " ".join(args[1:split]), " ".join(args[split + 1:])
    else:
        name, raw = " ".join(args[1:]), None
    opt = options.get(name.lower())
    if opt is None:
        raise ValueError(f"unknown option {echo(name)}; known options: " + ", ".join(o.name for o in options.values()))
    if raw is None and opt.type not in ("button", "string"):
        raise ValueError(f"setoption {opt.name} needs a value")
    try:
        opt.value = opt.parse(raw)
    except ValueError as exc:
        raise ValueError(f"{exc}; {opt.name} stays {opt.value}") from None
    return opt
