"""What a recipe is built from: the calls that cross between flow, scheduler and engines (`calls`), a step
(`step`), the sans-IO flow every recipe shares (`flow`), the recipe contract and its registry (`recipe`,
`recipes`), prompt sets (`prompts`), lenient answer readers (`parsing`), the input layer (`rows`, `corpus`) and the
measures the report views share (`views`).

The bottom layer: it imports nothing of airgen's outside itself (the registry loads recipe folders by name, at run
time)."""
