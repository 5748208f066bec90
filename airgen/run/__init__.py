"""The run loop and its instruments: the scheduler, `airgen run` itself (`runner`: folder, fingerprint, engines,
signals), `--ray` (`cluster`), `airgen bench`, the accounting (`metrics`) and what shows it (`panel`,
`prometheus`, `summary`).

May import `method`, `config`, `store` and `engines`; never the read side, selection or a recipe folder (recipes
come through the registry)."""
