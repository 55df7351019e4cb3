from .app import main
from . import persist_commands as _persist_commands  # noqa: F401

main(prog_name="campaign-counters")
