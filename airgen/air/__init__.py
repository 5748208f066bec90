"""AIR (Automatic Iterative Refinement): the steps (`air.steps`) and the state machine that orders them (`air.flow`)."""
