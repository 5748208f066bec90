"""CRAB (constraint back-translation, arXiv 2410.24175): constraints a response already meets, written down from
instruction-response pairs. The rule-built constraints (`crab.rules`), the model's steps (`crab.steps`), the state
machine that orders them (`crab.flow`) and the records it makes (`crab.records`)."""
