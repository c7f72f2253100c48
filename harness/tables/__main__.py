"""`python -m harness.tables` (= `make tables`)."""

from harness.tables import main

main()
