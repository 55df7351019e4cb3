"""`python -m campaign_counters`: the command line."""

from .cli import main

main(prog_name="campaign-counters")
