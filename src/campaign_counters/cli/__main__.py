from .app import main
from . import persist_commands  # noqa: F401  (registers its commands on main)

main(prog_name="campaign-counters")
