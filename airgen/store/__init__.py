"""The run folder on disk, as the run writes it: whole files and append-only logs (`files`), the call journal
(`journal`), the output files (`sink`), one writer per folder (`lock`), the folder's names and line readers
(`folder`).

May import `method` (the call types) and `config`; never the run loop, the read side or a recipe."""
