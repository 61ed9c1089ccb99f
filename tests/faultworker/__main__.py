"""`python -m tests.faultworker start`: the production worker with tests.faultworker's faults."""

import tests.faultworker  # noqa: F401  (installs the wrapped entrypoint)
from agent.__main__ import main

main()
