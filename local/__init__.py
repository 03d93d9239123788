"""Local mode: try Handrail without a Slack workspace.

`handrail web` without Slack credentials serves the same app with its Slack Web API pointed at the
stand-in in `local.slack` (the one the tests use too), mounted in the same process, and a Slack-like
page at `/local`. Nothing in bot/, handlers/ or storage/ imports this package but bot.cli.
"""
