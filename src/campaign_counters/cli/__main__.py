from .app import main
from . import nightly_commands, persist_commands  # noqa: F401  (register their commands on main)

main(prog_name="campaign-counters")
