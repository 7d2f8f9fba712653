"""`python -m researchflow_client watch`: follow a run (or a project) from a terminal.

Live progress bars per stage, the run's status, artifacts and approvals as they happen, and an
exit code that is the run's outcome, so shell scripts and CI can wait on a run. Parts:
`state.py` (the picture, from events alone), `view.py` (that picture as rich renderables),
`sinks.py` (the live terminal view, or one JSON object per line), `session.py` (follow the
stream, resync policy, when to stop), `cli.py` (arguments, token, exit codes).
"""

from __future__ import annotations
