"""Block Kit builders: pure functions from domain facts to Slack messages and modals, one module
per surface. Each module owns its action and view ids and the typed metadata models that its
builder writes and its handler parses."""
