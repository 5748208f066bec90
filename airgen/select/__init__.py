"""`airgen select`: the rule filters, the embedding (in process or on Ray workers) and the farthest-point sampling
of `kernels/`, written as a selection folder (`selection`).

May import `method` (the input layer), `config` and `store`; never the run loop or the read side."""
