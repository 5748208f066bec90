"""The run loop and its instruments: the scheduler, `airgen run` itself (`runner`: folder, fingerprint, engines,
signals), the deadline and the estimate it shares with the ETA (`deadline`), `--ray` (`cluster`), `airgen bench`,
the accounting (`metrics`) and what shows it (`panel`, `prometheus`, `summary`, `status`).

May import `method`, `config`, `store` and `engines`; never the read side, selection, a recipe folder (recipes
come through the registry) or the API above it."""
