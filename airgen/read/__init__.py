"""A run folder read back, in one pass and bounded memory, and what is made of it: the reading itself (`view`:
units replayed, lines streamed, the journal's index), `airgen report`, the dataset card, `airgen export` and
`airgen trace`.

May import `method`, `config`, `store` and `engines` (model names); never the run loop. Writes only its own
outputs (OUT/report/, an export folder, the journal's index)."""
