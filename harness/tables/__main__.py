"""`python -m harness.tables` (= `make tables`)."""

from harness.tables.build import main

main()
