"""airgen: complex instruction-following data from human-written documents (AIR), and from instruction-response
pairs (CRAB), as fast as one node allows.

From Python: `airgen.run(...)` (or `await airgen.arun(...)` inside a running event loop) makes or resumes a run
folder and returns its `Run`; `airgen.load(out)` opens one. The command line, `airgen run`, is built on the same
functions. See the README's "From Python".
"""
from airgen.api import Lines, Run, arun, load, run
from airgen.config import ConfigError
from airgen.method.rows import CorpusError

__all__ = ["run", "arun", "load", "Run", "Lines", "ConfigError", "CorpusError"]
