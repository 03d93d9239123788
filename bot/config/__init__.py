"""Settings from the environment and the agents' YAML config (HANDRAIL_CONFIG).

Every problem with the config or the environment is reported as a ConfigError that carries one
Problem per mistake: the key (``agents.lead-router.channel``, ``PORT``), the line of the file
when known, and a plain sentence saying what is wrong and what to write instead. A file is
checked as a whole, so one run lists every problem; `placeholders()` finds values left over from
the example config, which are valid but cannot work.

The package's modules: models (the YAML's models), durations, problems and sentences (how
mistakes are told), loading (reading the file), settings (the environment). What the rest of
Handrail uses is importable from here.
"""

from bot.config.durations import Duration, format_duration, parse_duration
from bot.config.loading import EXAMPLE_IDS, CheckedConfig, check_config, load_config, parse_config, placeholders
from bot.config.models import (
    DEFAULT_EXECUTE_WINDOW,
    DEFAULT_LADDER,
    USER_ID,
    AgentConfig,
    Condition,
    HandrailConfig,
    Mode,
    Policy,
    Role,
    SummaryConfig,
    Targets,
)
from bot.config.problems import ConfigError, Problem, where
from bot.config.settings import Settings, load_settings, package_version, redact

__all__ = [
    "DEFAULT_EXECUTE_WINDOW",
    "DEFAULT_LADDER",
    "EXAMPLE_IDS",
    "USER_ID",
    "AgentConfig",
    "CheckedConfig",
    "Condition",
    "ConfigError",
    "Duration",
    "HandrailConfig",
    "Mode",
    "Policy",
    "Problem",
    "Role",
    "Settings",
    "SummaryConfig",
    "Targets",
    "check_config",
    "format_duration",
    "load_config",
    "load_settings",
    "package_version",
    "parse_config",
    "parse_duration",
    "placeholders",
    "redact",
    "where",
]
