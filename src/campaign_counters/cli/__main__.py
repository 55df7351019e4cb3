from . import main

main(prog_name="campaign-counters")
