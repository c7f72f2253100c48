"""`python -m harness.tables` (= `make tables`)."""

from harness.cli import run_main
from harness.tables import main

run_main(main, elsewhere="--results DIR")
